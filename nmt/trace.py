"""What a recurrent network holds after each token of one text (``nmt inspect``, ``/v1/inspect``)."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class Trace:
    tokens: list[str]  # the pieces read, in order (a language model's first is its start symbol)
    states: np.ndarray  # [tokens, units]: the top layer's hidden state after each token
    predictions: list[list[tuple[str, float]]]  # language model: the k likeliest next pieces after each token
    description: str = ""  # what the states are, for a heading

    @property
    def norms(self) -> np.ndarray:
        return np.linalg.norm(self.states, axis=1)

    @property
    def changes(self) -> np.ndarray:
        """L2 distance from the state after the previous token (from zeros for the first)."""
        previous = np.concatenate([np.zeros_like(self.states[:1]), self.states[:-1]])
        return np.linalg.norm(self.states - previous, axis=1)
