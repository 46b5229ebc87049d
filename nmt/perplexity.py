"""How well a language model predicts a text, in units that compare across models."""

from __future__ import annotations

import dataclasses
import math


@dataclasses.dataclass
class Perplexity:
    """Total negative log-likelihood (nats) and what it is normalised by. Every line's end is one
    prediction (EOS), one word and one character (the newline), as in the Penn Treebank
    convention, so the figures compare across units."""

    nll: float
    tokens: int  # predictions made by the model (its own units, + 1 EOS per line)
    words: int  # whitespace-separated words + 1 per line
    characters: int  # characters + 1 per line (the newline)

    @property
    def loss(self) -> float:
        """Mean nats per model token."""
        return self.nll / max(self.tokens, 1)

    @property
    def token_perplexity(self) -> float:
        return math.exp(min(self.loss, 700.0))

    @property
    def word_perplexity(self) -> float:
        return math.exp(min(self.nll / max(self.words, 1), 700.0))

    @property
    def nats_per_character(self) -> float:
        return self.nll / max(self.characters, 1)

    @property
    def bits_per_character(self) -> float:
        return self.nats_per_character / math.log(2)

    def summary(self) -> str:
        return (
            f"word perplexity {self.word_perplexity:.2f}, {self.bits_per_character:.4f} bits/char "
            f"({self.nats_per_character:.4f} nats/char), loss {self.loss:.4f} nats/token, token perplexity "
            f"{self.token_perplexity:.2f} ({self.tokens} tokens, {self.words} words, {self.characters} characters)"
        )

    def as_dict(self) -> dict[str, float]:
        return {
            "loss": self.loss, "token_perplexity": self.token_perplexity, "word_perplexity": self.word_perplexity,
            "nats_per_character": self.nats_per_character, "bits_per_character": self.bits_per_character,
            "tokens": self.tokens, "words": self.words, "characters": self.characters,
        }

    def dev_record(self) -> dict[str, float]:
        """The fields a dev evaluation writes to metrics.jsonl."""
        return {
            "dev_loss": self.loss,
            "dev_word_perplexity": self.word_perplexity,
            "dev_bits_per_character": self.bits_per_character,
            "dev_nats_per_character": self.nats_per_character,
        }
