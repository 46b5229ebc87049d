"""How well a language model predicts a text (:func:`evaluate_perplexity`: ``nmt evaluate --text``,
a language model's dev scores), in units that compare across models (:class:`Perplexity`)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import tensorflow as tf

from nmt.constants import PAD_ID
from nmt.errors import NmtError
from nmt.pipeline import encode_texts, make_dataset, make_stream_dataset, token_stream


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


def evaluate_perplexity(lm: Any, texts: Sequence[str], streams: int = 1, window: int = 200,
                        progress: Callable[[int], None] | None = None) -> Perplexity:
    """Negative log-likelihood of ``texts`` (lines) under ``lm`` (a
    :class:`nmt.language_model.LanguageModelPredictor`). Running text is read as one stream,
    ``window`` tokens at a time with the state carried, so every token sees all of the text before
    it; ``streams`` > 1 cuts it into that many parts read side by side (faster; each part but the
    first starts without context). A sentence model scores each non-empty line on its own.

    >>> evaluate_perplexity(nmt.load("runs/ptb"), open("ptb.valid.txt").read().splitlines())  # doctest: +SKIP
    """
    texts = [t.strip() for t in texts]
    if not lm.running_text:
        texts = [t for t in texts if t]
    if not texts:
        raise NmtError("nothing to evaluate: the text has no non-empty lines")
    words = sum(len(t.split()) for t in texts) + len(texts)
    characters = sum(len(t) for t in texts) + len(texts)
    corpus = encode_texts(list(texts), lm.tokenizer)
    if lm.running_text:
        batches = make_stream_dataset(token_stream(corpus), streams, window, repeat=False)
    else:
        batches = make_dataset(corpus, batch_size=64, repeat=False, shuffle=False)
    model, running_text = lm.model, lm.running_text

    def score_batch(target_in: tf.Tensor, target_out: tf.Tensor, state: dict) -> tuple[tf.Tensor, tf.Tensor, dict]:
        """Summed NLL and count of the non-padding targets, and the state after the batch."""
        if not running_text:
            state = model.initial_state(tf.shape(target_in)[0])
        logits, final = model.forward(target_in, state)
        nll = tf.nn.sparse_softmax_cross_entropy_with_logits(target_out, logits)
        mask = tf.cast(tf.not_equal(target_out, PAD_ID), tf.float32)
        return tf.reduce_sum(nll * mask), tf.reduce_sum(mask), final

    score = lm.compiled(("perplexity",), lambda: tf.function(score_batch, autograph=False, reduce_retracing=True))
    nll, tokens = 0.0, 0
    state = model.initial_state(streams)
    for batch in batches:
        batch_nll, batch_tokens, state = score(batch["target_in"], batch["target_out"], state)
        nll += float(batch_nll)
        tokens += int(batch_tokens)
        if progress:
            progress(int(batch_tokens))
    return Perplexity(nll, tokens, words, characters)
