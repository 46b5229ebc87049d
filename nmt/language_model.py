"""A trained language model as a Python object: next whole words, generation, hidden states and
perplexity. The ``*_ids`` methods are the graph pieces the export traces into the SavedModel; the
text <-> ids rules are :mod:`nmt.text_policy`'s."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import overload

import numpy as np
import tensorflow as tf

from nmt import decoding
from nmt.config import Config
from nmt.constants import BOS_ID, EOS_ID, PAD_ID
from nmt.errors import NmtError
from nmt.models import LanguageModel
from nmt.next_word import NextWords, next_word_search
from nmt.perplexity import Perplexity
from nmt.pipeline import encode_texts, make_dataset, make_stream_dataset, pad_batch, token_stream
from nmt.samplers import Sampler
from nmt.signatures import (
    DEFAULT_K,
    DEFAULT_MAX_TOKENS,
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_K,
    DEFAULT_TOP_P,
    INSPECT_K,
    LANGUAGE_MODEL,
    MAX_K,
    check_generation,
    check_k,
)
from nmt.text_policy import ids_to_text, prompt_ids, text_length
from nmt.tokenizer import Tokenizer
from nmt.trace import Gradients, Trace

PROMPT_SPEC = [tf.TensorSpec([None, None], tf.int32, name="ids"), tf.TensorSpec([None], tf.int32, name="length")]
GRADIENTS_SPEC = [*PROMPT_SPEC, tf.TensorSpec([None], tf.int32, name="position")]
GENERATE_SPEC = [
    *PROMPT_SPEC,
    tf.TensorSpec([], tf.int32, name="max_tokens"),
    tf.TensorSpec([], tf.float32, name="temperature"),
    tf.TensorSpec([], tf.int32, name="top_k"),
    tf.TensorSpec([], tf.float32, name="top_p"),
    tf.TensorSpec([], tf.int32, name="seed"),
]


def _checked(check: Callable[[], object]) -> None:
    """The shared rules of :mod:`nmt.signatures` raise ValueError; the API raises NmtError."""
    try:
        check()
    except ValueError as error:
        raise NmtError(str(error)) from None


class LanguageModelRunner:
    """A trained language model: next whole words, text generation and perplexity.

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
        self._functions: dict[tuple, Callable] = {}

    def _function(self, key: tuple, build: Callable[[], Callable]) -> Callable:
        if key not in self._functions:
            self._functions[key] = build()
        return self._functions[key]

    def prime(self, ids: tf.Tensor, length: tf.Tensor) -> tuple[dict, tf.Tensor]:
        """Prompt ids [batch, time] (padded) -> the state before the prompt's last token and that
        token (the start id for an empty prompt): every search starts by feeding it."""
        batch = tf.shape(ids)[0]
        sequence = tf.concat([tf.fill([batch, 1], self.start_id), ids], axis=1)
        last = tf.gather(sequence, length, batch_dims=1)
        _, state = self.model.forward(sequence[:, :-1], self.model.initial_state(batch), lengths=length)
        return state, last

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

    def next_words_ids(self, ids: tf.Tensor, length: tf.Tensor, k: int | tf.Tensor,
                       beam_size: int) -> NextWords:
        state, last = self.prime(ids, length)
        return next_word_search(
            self.model.step, state, {}, last, self.pieces, k, beam_size, self.max_word_pieces,
            whole_pieces=self.config.tokenizer.model_type == "word",
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
        _checked(lambda: check_k(k, self.max_k))
        beam_size = self.beam_size_for(k)

        def build() -> Callable:
            return tf.function(lambda ids, length, k: self.next_words_ids(ids, length, k, beam_size), autograph=False,
                               input_signature=[*PROMPT_SPEC, tf.TensorSpec([], tf.int32, name="k")])

        encoded = prompt_ids(self.tokenizer, texts, self.max_prompt_tokens)
        results: list[list[tuple[str, float]]] = []
        for start in range(0, len(encoded), batch_size):
            ids, length = pad_batch(encoded[start : start + batch_size])
            found = self._function(("next_words", beam_size), build)(ids, length, tf.constant(k))
            results += [
                [(w.decode("utf-8"), float(p)) for w, p in zip(row_words, row_probs) if w]
                for row_words, row_probs in zip(found.words.numpy(), found.probabilities.numpy())
            ]
        return results

    # --- hidden states ---------------------------------------------------------------------

    def trace_ids(self, ids: tf.Tensor, length: tf.Tensor, k: int) -> dict[str, tf.Tensor]:
        """Reads the start symbol, then each prompt token, one step at a time. After each token:
        ``states`` [batch, 1 + time, units] (the top layer's hidden state, which the softmax reads)
        and the ``k`` likeliest next tokens, ``top_ids`` and ``top_probabilities`` [batch, 1 + time,
        k]; ``lengths`` [batch] counts the start symbol (rows past it are padding)."""
        batch = tf.shape(ids)[0]
        sequence = tf.concat([tf.fill([batch, 1], self.start_id), tf.cast(ids, tf.int32)], axis=1)

        def read(carry: tuple, ids_t: tf.Tensor) -> tuple:
            logits, state, _ = self.model.step(ids_t, carry[0], {})
            top = tf.math.top_k(tf.nn.softmax(logits), k)
            return state, tf.cast(state["rnn"][-1][0], tf.float32), top.indices, top.values

        initial = (self.model.initial_state(batch), tf.zeros([batch, self.model.decoder.units]),
                   tf.zeros([batch, k], tf.int32), tf.zeros([batch, k]))
        _, states, top_ids, top_probabilities = tf.scan(read, tf.transpose(sequence), initializer=initial)
        batch_major = [1, 0, 2]
        return {"states": tf.transpose(states, batch_major), "top_ids": tf.transpose(top_ids, batch_major),
                "top_probabilities": tf.transpose(top_probabilities, batch_major), "lengths": length + 1}

    @overload
    def trace(self, text: str, k: int | None = None) -> Trace: ...
    @overload
    def trace(self, text: Sequence[str], k: int | None = None) -> list[Trace]: ...

    def trace(self, text: str | Sequence[str], k: int | None = None) -> Trace | list[Trace]:
        """The hidden state and the ``k`` (default INSPECT_K) likeliest next pieces after each token."""
        if not isinstance(text, str):
            return [self.trace(t, k) for t in text]
        k = INSPECT_K if k is None else k
        _checked(lambda: check_k(k, self.tokenizer.vocab_size))
        ids = prompt_ids(self.tokenizer, [text], self.max_prompt_tokens)[0]

        def build() -> Callable:
            return tf.function(lambda ids, length: self.trace_ids(ids, length, k), autograph=False,
                               input_signature=PROMPT_SPEC)

        found = self._function(("trace", k), build)(tf.constant([ids], tf.int32), tf.constant([len(ids)], tf.int32))
        piece = self.tokenizer.id_to_piece
        predictions = [
            [(piece(int(i)), float(p)) for i, p in zip(row_ids, row_probs)]
            for row_ids, row_probs in zip(found["top_ids"].numpy()[0], found["top_probabilities"].numpy()[0])
        ]
        return Trace([piece(self.start_id), *map(piece, ids)], found["states"].numpy()[0], predictions,
                     "language model: the top layer's hidden state after each token, and the likeliest next pieces")

    # --- gradients: how far back the prediction still looks ----------------------------------

    def gradients_ids(self, ids: tf.Tensor, length: tf.Tensor,
                      position: tf.Tensor | None = None) -> dict[str, tf.Tensor]:
        """How strongly one prediction per row depends on each piece read (the start symbol, then
        the prompt): ``norms`` [batch, 1 + time], the L2 norm of the gradient of the prediction's
        log-probability with respect to each piece's input embedding (0 past ``position``).

        ``position`` [batch] (default ``length``, the last piece): the index of the last piece read.
        The prediction (``target_ids``, ``log_probabilities`` [batch]) is the text's own next piece
        where there is one, else the likeliest next piece. The model runs from its embedded inputs
        (the decoder's own step), so a tied output projection, which reads the same embedding table,
        adds nothing to these gradients."""
        batch = tf.shape(ids)[0]
        ids, length = tf.cast(ids, tf.int32), tf.cast(length, tf.int32)
        sequence = tf.concat([tf.fill([batch, 1], self.start_id), ids], axis=1)
        position = length if position is None else tf.clip_by_value(tf.cast(position, tf.int32), 0, length)
        own_next = tf.concat([ids, tf.zeros([batch, 1], tf.int32)], axis=1)  # piece t + 1 (0 past the text)
        decoder = self.model.decoder

        def read(carry: tuple, inputs: tuple) -> tuple:
            embedded_t, own_t = inputs
            logits, state, _ = decoder.step_embedded(embedded_t, carry[0], {}, False)
            log_probs = tf.nn.log_softmax(tf.cast(logits, tf.float32))
            return (state, tf.argmax(log_probs, axis=-1, output_type=tf.int32),
                    tf.gather(log_probs, own_t, batch_dims=1), tf.reduce_max(log_probs, axis=-1))

        with tf.GradientTape() as tape:
            embedded = decoder.embedding(sequence)
            tape.watch(embedded)
            initial = (self.model.initial_state(batch), tf.zeros([batch], tf.int32), tf.zeros([batch]),
                       tf.zeros([batch]))
            _, best_ids, own, best = tf.scan(read, (tf.transpose(embedded, [1, 0, 2]), tf.transpose(own_next)),
                                             initializer=initial)
            has_own = position < length  # the text goes on after the position: predict its own piece
            own, best = (tf.gather(tf.transpose(x), position, batch_dims=1) for x in (own, best))
            chosen = tf.where(has_own, own, best)
            total = tf.reduce_sum(chosen)  # rows are independent: each row's gradient is its own
        gradient = tf.cast(tape.gradient(total, embedded), tf.float32)
        read_by_then = tf.range(tf.shape(sequence)[1])[None, :] <= position[:, None]
        best_id = tf.gather(tf.transpose(best_ids), position, batch_dims=1)
        target_ids = tf.where(has_own, tf.gather(own_next, position, batch_dims=1), best_id)
        return {"norms": tf.where(read_by_then, tf.norm(gradient, axis=-1), 0.0), "lengths": length + 1,
                "position": position, "target_ids": target_ids, "log_probabilities": chosen}

    @overload
    def gradients(self, text: str, position: int | None = None, batch_size: int = 64) -> Gradients: ...
    @overload
    def gradients(self, text: Sequence[str], position: int | None = None, batch_size: int = 64) -> list[Gradients]: ...

    def gradients(self, text: str | Sequence[str], position: int | None = None,
                  batch_size: int = 64) -> Gradients | list[Gradients]:
        """How strongly a prediction still depends on each piece read before it: the L2 norm of the
        gradient of its log-probability with respect to each piece's input embedding (the start
        symbol is piece 0). By default the prediction is the likeliest next piece after the whole
        text; ``position=j`` asks instead for the text's own piece j + 1 given pieces 0..j (the
        pieces after j get NaN: the prediction has not read them). Norms that fall towards 0 going
        back are the vanishing gradient: what the model no longer uses."""
        if isinstance(text, str):
            return self.gradients([text], position)[0]
        encoded = prompt_ids(self.tokenizer, text, self.max_prompt_tokens)
        positions = [len(ids) if position is None else position for ids in encoded]
        for ids, last in zip(encoded, positions):
            if isinstance(last, bool) or not isinstance(last, int) or not 0 <= last <= len(ids):
                raise NmtError(f"position must be an integer between 0 (the start symbol) and {len(ids)} (the last "
                               f"of the {len(ids) + 1} pieces read), got {position!r}")

        def build() -> Callable:
            return tf.function(self.gradients_ids, autograph=False, input_signature=GRADIENTS_SPEC)

        results = []
        for start in range(0, len(encoded), batch_size):
            chunk, chunk_positions = encoded[start : start + batch_size], positions[start : start + batch_size]
            ids, lengths = pad_batch(chunk)
            found = self._function(("gradients",), build)(ids, lengths, tf.constant(chunk_positions, tf.int32))
            found = {key: value.numpy() for key, value in found.items()}
            results += [self._gradients_of_row(found, row, prompt, last)
                        for row, (prompt, last) in enumerate(zip(chunk, chunk_positions))]
        return results

    def _gradients_of_row(self, found: dict[str, np.ndarray], row: int, ids: list[int], last: int) -> Gradients:
        norms = found["norms"][row][: len(ids) + 1].astype(np.float64)
        norms[last + 1 :] = np.nan
        tokens = [self.tokenizer.id_to_piece(i) for i in [self.start_id, *ids]]
        target = self.tokenizer.id_to_piece(int(found["target_ids"][row]))
        kind = "the likeliest next piece" if last == len(ids) else "the text's own next piece"
        return Gradients(tokens, norms, found["log_probabilities"][row : row + 1].astype(np.float64),
                         f"language model: gradient of log p({target} | pieces 0..{last}), {kind}, with respect "
                         "to each piece's embedding", target=target, position=last)

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
        _checked(lambda: check_generation(max_tokens, temperature, top_k, top_p, seed, self.tokenizer.vocab_size))

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
            result = self._function(("generate",), build)(
                ids, length, tf.constant(max_tokens), tf.constant(temperature, tf.float32), tf.constant(top_k),
                tf.constant(top_p, tf.float32), tf.constant(seed),
            )
            out_ids, out_lengths = result.ids.numpy()[:, 0], result.lengths.numpy()[:, 0]
            for prompt, row, n in zip(chunk, out_ids, out_lengths):
                written = row[: n if self.running_text else text_length(row, int(n))]
                texts.append(ids_to_text(self.tokenizer, prompt + list(written), self.running_text))
        return texts

    # --- perplexity --------------------------------------------------------------------------

    def evaluate(
        self, texts: Sequence[str], streams: int = 1, window: int = 200, progress: Callable[[int], None] | None = None
    ) -> Perplexity:
        """Negative log-likelihood of ``texts`` (lines). Running text is read as one stream,
        ``window`` tokens at a time with the state carried, so every token sees all of the text
        before it; ``streams`` > 1 cuts it into that many parts read side by side (faster; each
        part but the first starts without context). A sentence model scores each non-empty line
        on its own."""
        texts = [t.strip() for t in texts]
        if not self.running_text:
            texts = [t for t in texts if t]
        if not texts:
            raise NmtError("nothing to evaluate: the text has no non-empty lines")
        words = sum(len(t.split()) for t in texts) + len(texts)
        characters = sum(len(t) for t in texts) + len(texts)
        corpus = encode_texts(list(texts), self.tokenizer)
        if self.running_text:
            batches = make_stream_dataset(token_stream(corpus), streams, window, repeat=False)
        else:
            batches = make_dataset(corpus, batch_size=64, repeat=False, shuffle=False)
        nll, tokens = 0.0, 0
        state = self.model.initial_state(streams)
        score = self._function(("score",),
                               lambda: tf.function(self._score_batch, autograph=False, reduce_retracing=True))
        for batch in batches:
            batch_nll, batch_tokens, state = score(batch["target_in"], batch["target_out"], state)
            nll += float(batch_nll)
            tokens += int(batch_tokens)
            if progress:
                progress(int(batch_tokens))
        return Perplexity(nll, tokens, words, characters)

    def _score_batch(self, target_in: tf.Tensor, target_out: tf.Tensor,
                     state: dict) -> tuple[tf.Tensor, tf.Tensor, dict]:
        """Summed NLL and count of the non-padding targets, and the state after the batch."""
        if not self.running_text:
            state = self.model.initial_state(tf.shape(target_in)[0])
        logits, final = self.model.forward(target_in, state)
        nll = tf.nn.sparse_softmax_cross_entropy_with_logits(target_out, logits)
        mask = tf.cast(tf.not_equal(target_out, PAD_ID), tf.float32)
        return tf.reduce_sum(nll * mask), tf.reduce_sum(mask), final
