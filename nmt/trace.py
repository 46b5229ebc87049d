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


@dataclasses.dataclass
class Gradients:
    """How strongly a prediction still depends on each token read before it: the L2 norm of the
    gradient of the prediction's log-probability with respect to that token's input embedding.

    Language model: one prediction, the piece after ``tokens[position]`` (``target``); ``norms``
    [tokens], NaN for the tokens after ``position`` (the prediction has not read them). Translation:
    one prediction per output piece of the greedy translation (``target_tokens``, with the final
    ``</s>``); ``norms`` [target_tokens, tokens], ``tokens`` being the source pieces.
    """

    tokens: list[str]  # the pieces read (a language model's first is its start symbol); translation: the source
    norms: np.ndarray  # [tokens] (language model) or [target_tokens, tokens] (translation)
    log_probabilities: np.ndarray  # [1] (language model) or [target_tokens]: what was differentiated
    description: str = ""  # what was differentiated, for a heading
    target: str = ""  # language model: the predicted piece
    position: int = -1  # language model: the index in tokens of the last piece read before target
    target_tokens: list[str] = dataclasses.field(default_factory=list)  # translation: the output pieces

    @property
    def source_tokens(self) -> list[str]:
        return self.tokens

    @property
    def log_probability(self) -> float:
        """Language model: log p(target | tokens up to position)."""
        return float(self.log_probabilities[0])

    @property
    def distances(self) -> np.ndarray:
        """Language model: how many pieces back each token is from the predicted position (0: the
        last piece read; negative: read after it)."""
        return self.position - np.arange(len(self.tokens))
