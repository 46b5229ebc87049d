"""Compiled functions kept per key (a beam size, a k): a predictor traces each ``tf.function`` once
and calls it again; building one per call would retrace it every time."""

from __future__ import annotations

from collections.abc import Callable, Hashable


class FunctionCache:
    """``cache(key, build)``: the function ``build()`` made the first time ``key`` was asked for."""

    def __init__(self) -> None:
        self._functions: dict[Hashable, Callable] = {}

    def __call__(self, key: Hashable, build: Callable[[], Callable]) -> Callable:
        if key not in self._functions:
            self._functions[key] = build()
        return self._functions[key]
