"""Decoding strategies, apart from any model: greedy search and batched beam search.

Every strategy drives a ``step_fn(ids, state, context) -> (logits, state, attention)`` with core
TensorFlow ops only (``tf.while_loop``, ``tf.gather``, ``tf.math.top_k``): no Python per step, no
``py_function``, nothing outside core TF, so the same code runs eagerly, inside ``tf.function`` and
inside an exported SavedModel (TensorFlow Serving runs core ops only).

``state`` is gathered when beams are reordered; ``context`` (the encoder memory) is only tiled.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import tensorflow as tf

from nmt.tokenizer import BOS_ID, EOS_ID

StepFn = Callable[[tf.Tensor, Any, Any], tuple[tf.Tensor, Any, tf.Tensor]]
# A log-probability low enough to never be chosen, finite so that sums never turn into NaN.
_NEG = -1e9


class DecodeResult(NamedTuple):
    """Hypotheses per input, best first.

    ids [batch, n, time] (EOS included, then padding), lengths [batch, n] (with EOS),
    scores [batch, n] (log-probability divided by the length penalty), attention
    [batch, n, time, source] (the weights used at each output step).
    """

    ids: tf.Tensor
    lengths: tf.Tensor
    scores: tf.Tensor
    attention: tf.Tensor


def max_output_lengths(source_lengths: tf.Tensor, ratio: float, offset: int) -> tf.Tensor:
    """Output length limit per sentence, in tokens including EOS."""
    return tf.cast(tf.math.ceil(tf.cast(source_lengths, tf.float32) * ratio), tf.int32) + offset


def length_penalty(lengths: tf.Tensor, alpha: float) -> tf.Tensor:
    """GNMT's ((5 + length) / 6) ** alpha (Wu et al. 2016); 1 when alpha is 0."""
    if alpha == 0:
        return tf.ones_like(tf.cast(lengths, tf.float32))
    return tf.pow((5.0 + tf.cast(lengths, tf.float32)) / 6.0, alpha)


def tile_batch(structure: Any, multiplier: int) -> Any:
    """Repeats every row ``multiplier`` times: row b becomes rows b*k .. b*k+k-1."""
    return tf.nest.map_structure(lambda t: tf.repeat(t, multiplier, axis=0), structure)


def _eos_only(vocab_size: tf.Tensor) -> tf.Tensor:
    return tf.where(tf.range(vocab_size) == EOS_ID, 0.0, _NEG)


def _shape_invariant(t: tf.Tensor) -> tf.TensorShape:
    return tf.TensorShape([None] * t.shape.rank)


def greedy_search(
    step_fn: StepFn, state: Any, context: Any, max_lengths: tf.Tensor, alpha: float = 0.0
) -> DecodeResult:
    """Picks the most likely token at every step. Stops when every sentence has ended.

    ``alpha`` only scales the reported scores (as in beam search), not the choice of tokens.
    """
    batch = tf.shape(max_lengths)[0]
    source = tf.shape(tf.nest.flatten(context)[0])[1] if tf.nest.flatten(context) else 0
    limit = tf.reduce_max(max_lengths)

    def cond(t, ids, state, finished, lengths, scores, seqs, attn):
        return tf.logical_and(t < limit, tf.logical_not(tf.reduce_all(finished)))

    def body(t, ids, state, finished, lengths, scores, seqs, attn):
        logits, state, weights = step_fn(ids, state, context)
        log_probs = tf.nn.log_softmax(tf.cast(logits, tf.float32))
        force_end = tf.logical_or(finished, t + 1 >= max_lengths)
        log_probs = tf.where(force_end[:, None], _eos_only(tf.shape(log_probs)[1])[None, :], log_probs)
        token = tf.argmax(log_probs, axis=-1, output_type=tf.int32)
        token_log_prob = tf.gather(log_probs, token, batch_dims=1)
        scores += tf.where(finished, 0.0, token_log_prob)
        lengths += tf.cast(tf.logical_not(finished), tf.int32)
        token = tf.where(finished, tf.zeros_like(token), token)  # padding after EOS
        finished = tf.logical_or(finished, tf.equal(token, EOS_ID))
        seqs = tf.concat([seqs, token[:, None]], axis=1)
        attn = tf.concat([attn, tf.cast(weights, tf.float32)[:, None, :]], axis=1)
        return t + 1, token, state, finished, lengths, scores, seqs, attn

    loop_vars = (
        tf.constant(0),
        tf.fill([batch], BOS_ID),
        state,
        tf.zeros([batch], tf.bool),
        tf.zeros([batch], tf.int32),
        tf.zeros([batch], tf.float32),
        tf.zeros([batch, 0], tf.int32),
        tf.zeros([batch, 0, source], tf.float32),
    )
    invariants = tf.nest.map_structure(_shape_invariant, loop_vars)
    _, _, _, _, lengths, scores, seqs, attn = tf.while_loop(
        cond, body, loop_vars, shape_invariants=invariants, maximum_iterations=limit
    )
    scores = scores / length_penalty(lengths, alpha)
    return DecodeResult(seqs[:, None], lengths[:, None], scores[:, None], attn[:, None])


def beam_search(
    step_fn: StepFn,
    state: Any,
    context: Any,
    max_lengths: tf.Tensor,
    beam_size: int,
    alpha: float = 0.6,
) -> DecodeResult:
    """Batched beam search with GNMT length penalty ``alpha``.

    Keeps ``beam_size`` hypotheses per sentence; a hypothesis that emits EOS stays in the beam with
    its score frozen, competing with the live ones. Candidates are ranked by log-probability divided
    by the length penalty. Stops when every hypothesis of every sentence has ended or the length limit
    is reached (EOS is then forced). ``state`` and ``context`` come untiled, [batch, ...].
    """
    k = beam_size
    batch = tf.shape(max_lengths)[0]
    state = tile_batch(state, k)
    context = tile_batch(context, k)
    flat_max = tf.repeat(max_lengths, k)
    source = tf.shape(tf.nest.flatten(context)[0])[1] if tf.nest.flatten(context) else 0
    limit = tf.reduce_max(max_lengths)
    # Only beam 0 is live at the start, so the first step does not pick the same token k times.
    initial_log_probs = tf.tile(tf.concat([[0.0], tf.fill([k - 1], _NEG)], axis=0), [batch])
    base = tf.repeat(tf.range(batch) * k, k)  # index of each sentence's first beam, per flat row

    def cond(t, ids, state, finished, lengths, log_probs, seqs, attn):
        return tf.logical_and(t < limit, tf.logical_not(tf.reduce_all(finished)))

    def body(t, ids, state, finished, lengths, log_probs, seqs, attn):
        logits, state, weights = step_fn(ids, state, context)
        step_log_probs = tf.nn.log_softmax(tf.cast(logits, tf.float32))
        vocab = tf.shape(step_log_probs)[1]
        force_end = tf.logical_or(finished, t + 1 >= flat_max)
        step_log_probs = tf.where(force_end[:, None], _eos_only(vocab)[None, :], step_log_probs)
        total = log_probs[:, None] + step_log_probs  # [batch*k, vocab]
        new_lengths = lengths + tf.cast(tf.logical_not(finished), tf.int32)
        ranking = total / length_penalty(new_lengths, alpha)[:, None]
        _, top = tf.math.top_k(tf.reshape(ranking, [batch, k * vocab]), k=k)
        parent = base + tf.reshape(top // vocab, [-1])  # flat row of each chosen hypothesis' parent
        token = tf.reshape(top % vocab, [-1])
        log_probs = tf.gather_nd(total, tf.stack([parent, token], axis=1))
        was_finished = tf.gather(finished, parent)
        lengths = tf.gather(new_lengths, parent)
        token = tf.where(was_finished, tf.zeros_like(token), token)  # padding after EOS
        finished = tf.logical_or(was_finished, tf.equal(token, EOS_ID))
        state = tf.nest.map_structure(lambda s: tf.gather(s, parent), state)
        seqs = tf.concat([tf.gather(seqs, parent), token[:, None]], axis=1)
        # This step's attention belongs to the parent that was extended, like its state.
        weights = tf.gather(tf.cast(weights, tf.float32), parent)
        attn = tf.concat([tf.gather(attn, parent), weights[:, None, :]], axis=1)
        # A finished hypothesis' token is padding, but the next step still needs a valid id.
        return t + 1, tf.where(finished, EOS_ID, token), state, finished, lengths, log_probs, seqs, attn

    loop_vars = (
        tf.constant(0),
        tf.fill([batch * k], BOS_ID),
        state,
        tf.zeros([batch * k], tf.bool),
        tf.zeros([batch * k], tf.int32),
        initial_log_probs,
        tf.zeros([batch * k, 0], tf.int32),
        tf.zeros([batch * k, 0, source], tf.float32),
    )
    invariants = tf.nest.map_structure(_shape_invariant, loop_vars)
    _, _, _, _, lengths, log_probs, seqs, attn = tf.while_loop(
        cond, body, loop_vars, shape_invariants=invariants, maximum_iterations=limit
    )
    scores = tf.reshape(log_probs / length_penalty(lengths, alpha), [batch, k])
    order = tf.argsort(scores, axis=1, direction="DESCENDING", stable=True)

    def by_score(t: tf.Tensor) -> tf.Tensor:
        shaped = tf.reshape(t, tf.concat([[batch, k], tf.shape(t)[1:]], axis=0))
        return tf.gather(shaped, order, batch_dims=1)

    return DecodeResult(by_score(seqs), by_score(lengths), tf.gather(scores, order, batch_dims=1), by_score(attn))


def decode(
    step_fn: StepFn,
    state: Any,
    context: Any,
    max_lengths: tf.Tensor,
    beam_size: int = 1,
    alpha: float = 0.6,
) -> DecodeResult:
    """Greedy search for ``beam_size == 1``, beam search otherwise."""
    if beam_size == 1:
        return greedy_search(step_fn, state, context, max_lengths, alpha)
    return beam_search(step_fn, state, context, max_lengths, beam_size, alpha)
