"""A trained language model as a Python object: next whole words and generation. The ``*_ids``
methods are the graph pieces the export traces into the SavedModel; the text <-> ids rules are
:mod:`nmt.text_policy`'s."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple, overload

import numpy as np
import tensorflow as tf

from nmt import decoding
from nmt.config import Config
from nmt.constants import BOS_ID, EOS_ID
from nmt.errors import as_nmt_error
from nmt.function_cache import FunctionCache
from nmt.inspection import PROMPT_SPEC, LanguageModelInspection
from nmt.lexicon import Lexicon
from nmt.models import LanguageModel
from nmt.next_word import NextWords, Prefix, Spellings, next_word_search, spellings_of
from nmt.pipeline import pad_batch
from nmt.samplers import Sampler
from nmt.scoring import Score, score_in_batches
from nmt.signatures import (
    DEFAULT_K,
    DEFAULT_MAX_TOKENS,
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_K,
    DEFAULT_TOP_P,
    LANGUAGE_MODEL,
    MAX_K,
    SUGGEST_K,
    check_generation,
    check_k,
)
from nmt.text_policy import ids_to_text, prefix_chars, prompt_ids, split_typed_word, teacher_forced, text_length
from nmt.tokenizer import Tokenizer

# The word being typed, as code points (nmt.next_word.Prefix).
PREFIX_SPEC = [tf.TensorSpec([None, None], tf.int32, name="prefix"),
               tf.TensorSpec([None], tf.int32, name="prefix_lengths")]


class Suggestions(NamedTuple):
    """What a keyboard shows after a text: ``completing`` the word being typed ("" when the text ends
    with a space or punctuation) and ``words``, its likeliest completions (probabilities given the
    prefix, summing to 1 over the words found) or else the likeliest next words, best first."""

    completing: str
    words: list[tuple[str, float]]

    def to_json(self) -> dict:
        return {"completing": self.completing,
                "words": [{"word": word, "probability": probability} for word, probability in self.words]}


GENERATE_SPEC = [
    *PROMPT_SPEC,
    tf.TensorSpec([], tf.int32, name="max_tokens"),
    tf.TensorSpec([], tf.float32, name="temperature"),
    tf.TensorSpec([], tf.int32, name="top_k"),
    tf.TensorSpec([], tf.float32, name="top_p"),
    tf.TensorSpec([], tf.int32, name="seed"),
]


class LanguageModelPredictor:
    """A trained language model: next whole words and text generation (its perplexity of a text:
    :func:`nmt.perplexity.evaluate_perplexity`; its hidden states and gradients: ``.inspect``).

    Trained line by line (``train.bptt_steps`` null), a text is one sequence: BOS, tokens, EOS, and
    generation stops at EOS. Trained on running text (TBPTT), EOS is a line break: the model reads a
    prompt as the start of a new line and generation runs on to ``max_tokens``. One text in gives one
    answer; a list of texts gives a list.

    Example (after ``nmt train --config configs/lm-en.yaml``):
    >>> lm = nmt.load("runs/lm-en")                          # doctest: +SKIP
    >>> lm.next_words("She went to the", k=3)                # doctest: +SKIP
    [('hospital', 0.13), ('station', 0.114), ('party', 0.038)]
    """

    task = LANGUAGE_MODEL

    def __init__(self, model: LanguageModel, tokenizer: Tokenizer, config: Config) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self.running_text = config.train.bptt_steps is not None
        # What precedes a line's first token: BOS for sentence models, the previous line's EOS for
        # running text.
        self.start_id = EOS_ID if self.running_text else BOS_ID
        self.max_prompt_tokens = config.decode.max_source_length
        self.pieces = tf.constant([tokenizer.id_to_piece(i) for i in range(tokenizer.vocab_size)])
        # What each piece spells, for completing a typed prefix.
        self.spellings = Spellings(*(tf.constant(part) for part in spellings_of(tokenizer.spellings())))
        # Its compiled searches, kept per key; nmt.perplexity keeps its scorer here too.
        self.compiled = FunctionCache()
        # The words suggest may offer (nmt lexicon); None: whatever the model spells.
        self.lexicon: Lexicon | None = None
        # Hidden states and gradients (nmt inspect): lm.inspect.hidden_states("She went to the")
        self.inspect = LanguageModelInspection(model, tokenizer, self.start_id, self.max_prompt_tokens)

    def prime(self, ids: tf.Tensor, length: tf.Tensor) -> tuple[dict, tf.Tensor]:
        """Prompt ids [batch, time] (padded) -> the state before the prompt's last token and that
        token (the start id for an empty prompt): every search starts by feeding it."""
        batch = tf.shape(ids)[0]
        sequence = tf.concat([tf.fill([batch, 1], self.start_id), ids], axis=1)
        last = tf.gather(sequence, length, batch_dims=1)
        _, state = self.model.forward(sequence[:, :-1], self.model.initial_state(batch), lengths=length)
        return state, last

    # --- scoring -----------------------------------------------------------------------------

    def score(self, texts: Sequence[str], batch_size: int = 64,
              progress: Callable[[int], None] | None = None) -> list[Score]:
        """Each line's log-probability under the model, read on its own from the start (a model of
        running text: as if the line followed a line break, without the lines before it): its pieces,
        then EOS, with per-piece scores. An empty line scores EOS alone; ``normalized`` divides by
        ``decode.length_penalty``'s penalty, as a translation score is."""
        encoded = self.tokenizer.encode([t.strip() for t in texts])
        start_id = self.start_id

        def score_ids(ids: tf.Tensor, lengths: tf.Tensor) -> tf.Tensor:
            target_in, target_out, predicted = teacher_forced(ids, lengths, start_id)
            logits, _ = self.model.forward(target_in, self.model.initial_state(tf.shape(ids)[0]))
            return tf.where(predicted, tf.gather(tf.nn.log_softmax(logits), target_out, batch_dims=2), 0.0)

        function = self.compiled(("score",), lambda: tf.function(score_ids, autograph=False, input_signature=[
            tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([None], tf.int32)]))

        def scores_of(rows: list[int]) -> np.ndarray:
            return function(*pad_batch([encoded[i] for i in rows])).numpy()

        return score_in_batches(encoded, scores_of, self.tokenizer, self.config.decode.length_penalty, batch_size,
                                progress=progress)

    # --- next words --------------------------------------------------------------------------

    @property
    def max_word_pieces(self) -> int:
        return 24 if self.config.tokenizer.model_type == "char" else 8

    @property
    def max_k(self) -> int:
        """The most next words one query can ask for (fewer for a tiny vocabulary)."""
        return min(MAX_K, self.tokenizer.vocab_size - 4)

    def beam_size_for(self, k: int) -> int:
        return min(max(10, k), self.tokenizer.vocab_size)

    def use_lexicon(self, words: Sequence[str]) -> LanguageModelPredictor:
        """From now on ``suggest`` offers these words only (:mod:`nmt.lexicon`)."""
        self.lexicon = Lexicon(words)
        self.compiled = FunctionCache()  # searches traced without it
        return self

    def next_words_ids(self, ids: tf.Tensor, length: tf.Tensor, k: int | tf.Tensor,
                       beam_size: int, prefix: Prefix | None = None) -> NextWords:
        """The search after prompt ids; with ``prefix`` (``suggest``), completions of it, of the
        lexicon's words if the run has one (:func:`next_word_search`)."""
        state, last = self.prime(ids, length)
        suggesting = prefix is not None
        return next_word_search(
            self.model.step, state, {}, last, self.pieces, k, beam_size, self.max_word_pieces,
            whole_pieces=self.config.tokenizer.model_type == "word",
            prefix=prefix, spellings=self.spellings if suggesting else None,
            known=self.lexicon.contains if suggesting and self.lexicon is not None else None,
        )

    @overload
    def next_words(self, texts: str, k: int = DEFAULT_K, batch_size: int = 64) -> list[tuple[str, float]]: ...
    @overload
    def next_words(self, texts: Sequence[str], k: int = DEFAULT_K,
                   batch_size: int = 64) -> list[list[tuple[str, float]]]: ...

    def next_words(self, texts: str | Sequence[str], k: int = DEFAULT_K,
                   batch_size: int = 64) -> list[tuple[str, float]] | list[list[tuple[str, float]]]:
        """The ``k`` most likely next whole words after each text, with their probabilities.

        Trailing spaces do not matter: the next word is always a new word after the text. An empty
        text asks for the first word of a sentence.
        """
        if isinstance(texts, str):
            return self.next_words([texts], k, batch_size)[0]
        return self._words(texts, None, k, batch_size)

    def _words(self, contexts: Sequence[str], prefixes: Sequence[str] | None, k: int,
               batch_size: int) -> list[list[tuple[str, float]]]:
        """The search of :meth:`next_words` (``prefixes`` None) or :meth:`suggest` (each context's typed
        prefix, "" for none) in batches, one compiled function per kind and beam."""
        with as_nmt_error():
            check_k(k, self.max_k)
        beam_size = self.beam_size_for(k)
        suggesting = prefixes is not None
        k_spec = tf.TensorSpec([], tf.int32, name="k")

        def build() -> Callable:
            if suggesting:
                return tf.function(lambda ids, length, chars, char_lengths, k: self.next_words_ids(
                    ids, length, k, beam_size, Prefix(chars, char_lengths)),
                    autograph=False, input_signature=[*PROMPT_SPEC, *PREFIX_SPEC, k_spec])
            return tf.function(lambda ids, length, k: self.next_words_ids(ids, length, k, beam_size),
                               autograph=False, input_signature=[*PROMPT_SPEC, k_spec])

        function = self.compiled(("suggest" if suggesting else "next_words", beam_size), build)
        encoded = prompt_ids(self.tokenizer, contexts, self.max_prompt_tokens)
        chars = prefix_chars(prefixes)[0] if suggesting else None
        results: list[list[tuple[str, float]]] = []
        for start in range(0, len(encoded), batch_size):
            inputs = pad_batch(encoded[start : start + batch_size])
            if chars is not None:
                inputs += pad_batch(chars[start : start + batch_size])
            found = function(*inputs, tf.constant(k))
            results += [
                [(w.decode("utf-8"), float(p)) for w, p in zip(row_words, row_probs) if w]
                for row_words, row_probs in zip(found.words.numpy(), found.probabilities.numpy())
            ]
        return results

    @overload
    def suggest(self, texts: str, k: int = SUGGEST_K, batch_size: int = 64) -> Suggestions: ...
    @overload
    def suggest(self, texts: Sequence[str], k: int = SUGGEST_K, batch_size: int = 64) -> list[Suggestions]: ...

    def suggest(self, texts: str | Sequence[str], k: int = SUGGEST_K,
                batch_size: int = 64) -> Suggestions | list[Suggestions]:
        """What a keyboard shows after each text: the ``k`` likeliest completions of the word being
        typed ("I love piz" -> pizza, ...) or, after a space or punctuation, the ``k`` likeliest next
        words. The word being typed is cut off the text at its last word boundary (rule 5 of
        :mod:`nmt.text_policy`); the model reads the text before it and searches over pieces whose
        characters agree with the typed ones (subword models rarely write the prefix as the finished
        word's pieces: "piz" alone is ▁pi z, "pizza" is ▁pizza). With a lexicon (``nmt lexicon``),
        only its words are offered. A prefix no word can start with gives no words.

        >>> nmt.load("runs/keyboard-en").suggest("I love piz")           # doctest: +SKIP
        Suggestions(completing='piz', words=[('pizza', 0.97), ...])
        """
        if isinstance(texts, str):
            return self.suggest([texts], k, batch_size)[0]
        contexts, prefixes = zip(*(split_typed_word(text) for text in texts)) if texts else ((), ())
        return [Suggestions(prefix, words) for prefix, words in zip(prefixes, self._words(contexts, prefixes, k,
                                                                                          batch_size))]

    # --- generation --------------------------------------------------------------------------

    def generation_limit(self, max_tokens: int | tf.Tensor) -> int | tf.Tensor:
        """Search steps for ``max_tokens`` tokens of text: a sentence model's last step is its EOS,
        which is not text, so it gets one more."""
        return max_tokens if self.running_text else max_tokens + 1

    def generate_ids(
        self, ids: tf.Tensor, length: tf.Tensor, max_tokens: tf.Tensor, sampler: Sampler, seed: tf.Tensor
    ) -> decoding.DecodeResult:
        """``max_tokens``: tokens of text to write, and ``seed``: scalars or one per row."""
        state, last = self.prime(ids, length)
        limit = self.generation_limit(tf.cast(max_tokens, tf.int32))
        max_lengths = tf.broadcast_to(limit, [tf.shape(ids)[0]])
        return decoding.sample(
            self.model.step, state, {}, max_lengths, sampler, seed, start_ids=last, stop_at_eos=not self.running_text
        )

    @overload
    def generate(self, prompts: str, max_tokens: int = ..., temperature: float = ..., top_k: int = ...,
                 top_p: float = ..., seed: int = ..., batch_size: int = ...) -> str: ...
    @overload
    def generate(self, prompts: Sequence[str], max_tokens: int = ..., temperature: float = ..., top_k: int = ...,
                 top_p: float = ..., seed: int = ..., batch_size: int = ...) -> list[str]: ...

    def generate(
        self,
        prompts: str | Sequence[str],
        max_tokens: int = DEFAULT_MAX_TOKENS,
        temperature: float = DEFAULT_TEMPERATURE,
        top_k: int = DEFAULT_TOP_K,
        top_p: float = DEFAULT_TOP_P,
        seed: int = 0,
        batch_size: int = 64,
    ) -> str | list[str]:
        """Continues each prompt; returns prompt + continuation. ``temperature`` 0 is greedy;
        ``top_k`` 0 and ``top_p`` 1 disable those filters; the same ``seed`` gives the same text.
        ``max_tokens`` counts the tokens of text written (the end of sentence is not one)."""
        if isinstance(prompts, str):
            return self.generate([prompts], max_tokens, temperature, top_k, top_p, seed, batch_size)[0]
        with as_nmt_error():
            check_generation(max_tokens, temperature, top_k, top_p, seed, self.tokenizer.vocab_size)

        def build() -> Callable:
            return tf.function(
                lambda ids, length, max_tokens, temperature, top_k, top_p, seed: self.generate_ids(
                    ids, length, max_tokens, Sampler(temperature, top_k, top_p), seed),
                autograph=False, input_signature=GENERATE_SPEC)

        encoded = prompt_ids(self.tokenizer, prompts, self.max_prompt_tokens)
        texts = []
        for start in range(0, len(encoded), batch_size):
            chunk = encoded[start : start + batch_size]
            ids, length = pad_batch(chunk)
            result = self.compiled(("generate",), build)(
                ids, length, tf.constant(max_tokens), tf.constant(temperature, tf.float32), tf.constant(top_k),
                tf.constant(top_p, tf.float32), tf.constant(seed),
            )
            out_ids, out_lengths = result.ids.numpy()[:, 0], result.lengths.numpy()[:, 0]
            for prompt, row, n in zip(chunk, out_ids, out_lengths):
                written = row[: n if self.running_text else text_length(row, int(n))]
                texts.append(ids_to_text(self.tokenizer, prompt + list(written), self.running_text))
        return texts
