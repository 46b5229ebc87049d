"""Looking inside a trained model (``nmt inspect``, ``/v1/inspect``, the export's ``inspect`` and
``gradients`` signatures): the hidden state after each token read, and how strongly a prediction
still depends on each token before it (the gradient of its log-probability with respect to that
token's embedding).

Each predictor carries one inspection object as ``.inspect`` (:class:`LanguageModelInspection`,
:class:`TranslationInspection`) with the same two questions, ``hidden_states(text)`` and
``gradients(text)``; their ``*_ids`` methods are the graph pieces the export traces.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, overload

import numpy as np
import tensorflow as tf

from nmt.constants import BOS_ID
from nmt.errors import NmtError, as_nmt_error
from nmt.function_cache import FunctionCache
from nmt.pipeline import pad_batch
from nmt.signatures import INSPECT_K, check_k
from nmt.text_policy import prompt_ids, source_ids
from nmt.tokenizer import Tokenizer

PROMPT_SPEC = [tf.TensorSpec([None, None], tf.int32, name="ids"), tf.TensorSpec([None], tf.int32, name="length")]
LM_GRADIENTS_SPEC = [*PROMPT_SPEC, tf.TensorSpec([None], tf.int32, name="position")]
SOURCE_GRADIENTS_SPEC = [tf.TensorSpec([None], tf.int32, name="source"), tf.TensorSpec([None], tf.int32, name="target")]


@dataclasses.dataclass
class HiddenStates:
    """What a recurrent network holds after each token of one text."""

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


class LanguageModelInspection:
    """A language model's hidden states and gradients. ``model`` is the LanguageModel, ``start_id``
    what precedes a text's first token (BOS, or EOS for running text), ``max_prompt_tokens`` the
    longest text it reads."""

    def __init__(self, model: Any, tokenizer: Tokenizer, start_id: int, max_prompt_tokens: int) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.start_id, self.max_prompt_tokens = start_id, max_prompt_tokens
        self._compiled = FunctionCache()

    def hidden_states_ids(self, ids: tf.Tensor, length: tf.Tensor, k: int) -> dict[str, tf.Tensor]:
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
    def hidden_states(self, text: str, k: int | None = None) -> HiddenStates: ...
    @overload
    def hidden_states(self, text: Sequence[str], k: int | None = None) -> list[HiddenStates]: ...

    def hidden_states(self, text: str | Sequence[str], k: int | None = None) -> HiddenStates | list[HiddenStates]:
        """The hidden state and the ``k`` (default INSPECT_K) likeliest next pieces after each token."""
        if not isinstance(text, str):
            return [self.hidden_states(t, k) for t in text]
        k = INSPECT_K if k is None else k
        with as_nmt_error():
            check_k(k, self.tokenizer.vocab_size)
        ids = prompt_ids(self.tokenizer, [text], self.max_prompt_tokens)[0]

        def build() -> Callable:
            return tf.function(lambda ids, length: self.hidden_states_ids(ids, length, k), autograph=False,
                               input_signature=PROMPT_SPEC)

        found = self._compiled(("states", k), build)(tf.constant([ids], tf.int32), tf.constant([len(ids)], tf.int32))
        piece = self.tokenizer.id_to_piece
        predictions = [
            [(piece(int(i)), float(p)) for i, p in zip(row_ids, row_probs)]
            for row_ids, row_probs in zip(found["top_ids"].numpy()[0], found["top_probabilities"].numpy()[0])
        ]
        return HiddenStates([piece(self.start_id), *map(piece, ids)], found["states"].numpy()[0], predictions,
                            "language model: the top layer's hidden state after each token, and the likeliest "
                            "next pieces")

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
            return tf.function(self.gradients_ids, autograph=False, input_signature=LM_GRADIENTS_SPEC)

        results = []
        for start in range(0, len(encoded), batch_size):
            chunk, chunk_positions = encoded[start : start + batch_size], positions[start : start + batch_size]
            ids, lengths = pad_batch(chunk)
            found = self._compiled(("gradients",), build)(ids, lengths, tf.constant(chunk_positions, tf.int32))
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


class TranslationInspection:
    """A translation model's encoder states and source gradients. ``greedy`` translates one
    sentence's source ids to its output ids (with the final EOS): the output the gradients follow."""

    def __init__(self, model: Any, source_tokenizer: Tokenizer, target_tokenizer: Tokenizer,
                 max_source_length: int, greedy: Callable[[list[int]], np.ndarray]) -> None:
        self.model, self.source_tokenizer, self.target_tokenizer = model, source_tokenizer, target_tokenizer
        self.max_source_length, self.greedy = max_source_length, greedy
        self._compiled = FunctionCache()

    def hidden_states_ids(self, ids: tf.Tensor, lengths: tf.Tensor) -> tf.Tensor:
        """The encoder's output after each source token [batch, time, units x directions] (the
        forward and backward halves of a bidirectional encoder side by side): what attention reads."""
        memory, _ = self.model.encoder(ids, lengths, training=False)
        return memory

    def _source(self, text: str) -> list[int]:
        ids = source_ids(self.source_tokenizer, [text], self.max_source_length)[0][0]
        if not ids:
            raise NmtError("nothing to inspect: the text is empty")
        return ids

    @overload
    def hidden_states(self, text: str, k: int | None = None) -> HiddenStates: ...
    @overload
    def hidden_states(self, text: Sequence[str], k: int | None = None) -> list[HiddenStates]: ...

    def hidden_states(self, text: str | Sequence[str], k: int | None = None) -> HiddenStates | list[HiddenStates]:
        """The encoder's state after each piece of ``text`` (cut to decode.max_source_length)."""
        if k is not None:
            raise NmtError("-k is for language models: a translation run shows its encoder's states")
        if not isinstance(text, str):
            return [self.hidden_states(t) for t in text]
        ids = self._source(text)
        states = self.hidden_states_ids(tf.constant([ids], tf.int32), tf.constant([len(ids)], tf.int32))
        return HiddenStates([self.source_tokenizer.id_to_piece(i) for i in ids], states.numpy()[0], [],
                            "translation encoder: its output after each source piece (what attention reads)")

    def gradient_norms(self, source: tf.Tensor, target: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """One sentence's source ids [source] and output ids [target] (ending in EOS) -> the norm of
        the gradient of each output piece's log-probability (teacher-forced on ``target``) with
        respect to each source piece's embedding [target, source], and those log-probabilities.

        The sentence is read once per output piece, as a batch, each row differentiating its own
        piece; the encoder's embedding table is read by the lookup alone, so its gradient holds one
        row per looked-up position, in order (``IndexedSlices``): the per-position gradients."""
        rows, width = tf.shape(target)[0], tf.shape(source)[0]
        target_in = tf.concat([[BOS_ID], target[:-1]], axis=0)
        batch = {"source": tf.tile(source[None, :], [rows, 1]), "source_length": tf.fill([rows], width),
                 "target_in": tf.tile(target_in[None, :], [rows, 1])}
        table = self.model.encoder.embedding.embeddings
        with tf.GradientTape() as tape:
            log_probs = tf.nn.log_softmax(tf.cast(self.model(batch), tf.float32))  # [rows, target, vocab]
            steps = tf.range(rows)
            picked = tf.gather_nd(log_probs, tf.stack([steps, steps, target], axis=1))  # row t: piece t
            total = tf.reduce_sum(picked)
        gradient = tape.gradient(total, table)
        if not isinstance(gradient, tf.IndexedSlices):  # the table is read by something else too
            raise NmtError("the source embedding table is not read by its lookup alone: no per-token gradients")
        per_position = tf.reshape(tf.cast(gradient.values, tf.float32), [rows, width, -1])
        return tf.norm(per_position, axis=-1), picked

    @overload
    def gradients(self, text: str, position: int | None = None) -> Gradients: ...
    @overload
    def gradients(self, text: Sequence[str], position: int | None = None) -> list[Gradients]: ...

    def gradients(self, text: str | Sequence[str], position: int | None = None) -> Gradients | list[Gradients]:
        """For each output piece of the greedy translation of ``text`` (with its final ``</s>``), the
        L2 norm of the gradient of its log-probability with respect to each source piece's
        embedding: a matrix [target, source], the gradient counterpart of the attention map (which
        source pieces each output piece still depends on, through attention and the recurrence)."""
        if position is not None:
            raise NmtError("--position is for language models: a translation run differentiates every output piece")
        if not isinstance(text, str):
            return [self.gradients(t) for t in text]
        ids = self._source(text)
        target = self.greedy(ids)

        def build() -> Callable:
            return tf.function(self.gradient_norms, autograph=False, input_signature=SOURCE_GRADIENTS_SPEC)

        norms, picked = self._compiled(("gradients",), build)(tf.constant(ids, tf.int32), tf.constant(target, tf.int32))
        piece = self.target_tokenizer.id_to_piece
        return Gradients([self.source_tokenizer.id_to_piece(i) for i in ids], norms.numpy().astype(np.float64),
                         picked.numpy().astype(np.float64),
                         "translation: gradient of each output piece's log-probability (greedy output, teacher-forced) "
                         "with respect to each source piece's embedding", target_tokens=[piece(int(i)) for i in target])
