"""The runnable examples in class docstrings run and print what they claim."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["nmt.tokenizer", "nmt.layers.recurrent", "nmt.layers.attention", "nmt.layers.encoder",
           "nmt.layers.decoder", "nmt.models", "nmt.signatures", "nmt.tasks"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no docstring example"
    assert result.failed == 0
