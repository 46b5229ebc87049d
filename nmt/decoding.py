"""Decoding strategies, apart from any model: greedy search, sampling, batched beam search and
the next-word search of language models.

Every strategy drives a ``step_fn(ids, state, context) -> (logits, state, attention)`` with core
TensorFlow ops only (``tf.while_loop``, ``tf.gather``, ``tf.math.top_k``): no Python per step, no
``py_function``, nothing outside core TF, so the same code runs eagerly, inside ``tf.function`` and
inside an exported SavedModel (TensorFlow Serving runs core ops only).

``state`` is gathered when beams are reordered; ``context`` (the encoder memory) is only tiled.
Every search starts by feeding ``start_ids`` (BOS by default; a language model continuing a prompt
passes the prompt's last token, with ``state`` the state before it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
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


def _shape_invariant(t: tf.Tensor | tf.TensorArray) -> tf.TensorShape:
    """Any size in every dimension (a step function may return less static shape than it got)."""
    if isinstance(t, tf.TensorArray):
        return tf.TensorShape(None)
    return tf.TensorShape([None] * t.shape.rank)


def _while(cond: Callable, body: Callable, loop_vars: tuple, limit: tf.Tensor) -> tuple:
    invariants = tf.nest.map_structure(_shape_invariant, loop_vars)
    return tf.while_loop(cond, body, loop_vars, shape_invariants=invariants, maximum_iterations=limit)


class Sampler:
    """Chooses the next token from logits: greedy (``temperature`` 0), or a random draw at
    ``temperature`` from the ``top_k`` most likely tokens (0: all) whose cumulated probability
    reaches ``top_p`` (nucleus sampling; 1.0: all).

    Each parameter is a Python number, a scalar tensor or one value per row ([batch]): an exported
    signature takes them as inputs, and a server may batch requests with different settings. Draws
    are stateless and per row (Gumbel-max with noise seeded by the row's seed and the step), so a
    row's text depends on its own prompt, settings and seed only: the same in eager mode, inside
    ``tf.function``, in a SavedModel, alone or batched with others.

    Example:
    >>> sampler = Sampler(temperature=0.8, top_k=2)
    >>> logits = tf.math.log([[0.1, 0.6, 0.3]])
    >>> int(Sampler()(logits, seed=1, step=0)[0])  # greedy
    1
    >>> bool(sampler(logits, seed=1, step=0)[0] in (1, 2))
    True
    """

    def __init__(self, temperature: float | tf.Tensor = 0.0, top_k: int | tf.Tensor = 0, top_p: float | tf.Tensor = 1.0) -> None:
        self.temperature = temperature
        self.top_k = top_k
        self.top_p = top_p

    @staticmethod
    def _per_row(value: Any, batch: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
        return tf.broadcast_to(tf.cast(value, dtype), [batch])

    def filtered_logits(self, logits: tf.Tensor) -> tf.Tensor:
        """Logits [batch, vocab] at the temperature, with tokens outside top-k / top-p at -1e9."""
        logits = tf.cast(logits, tf.float32)
        batch, vocab = tf.shape(logits)[0], tf.shape(logits)[1]
        temperature = self._per_row(self.temperature, batch, tf.float32)
        top_p = self._per_row(self.top_p, batch, tf.float32)
        logits = logits / tf.maximum(temperature, 1e-6)[:, None]
        ordered = tf.sort(logits, axis=-1, direction="DESCENDING")
        k = self._per_row(self.top_k, batch, tf.int32)
        k = tf.where(k > 0, tf.minimum(k, vocab), vocab)
        kth = tf.gather(ordered, k - 1, axis=-1, batch_dims=1)[:, None]
        # Nucleus: keep the smallest prefix of the ordered tokens whose probability reaches top_p
        # (always at least the first token).
        probs = tf.nn.softmax(ordered)
        before = tf.cumsum(probs, axis=-1, exclusive=True)
        inside = before < top_p[:, None]
        last_inside = tf.reduce_sum(tf.cast(inside, tf.int32), axis=-1)
        pth = tf.gather(ordered, tf.maximum(last_inside, 1) - 1, axis=-1, batch_dims=1)[:, None]
        # top_p 1 is off even where the float32 running sum reaches 1 before the last token.
        pth = tf.where(top_p[:, None] >= 1.0, tf.reduce_min(logits, axis=-1, keepdims=True), pth)
        threshold = tf.maximum(kth, pth)
        return tf.where(logits >= threshold, logits, _NEG)

    def __call__(self, logits: tf.Tensor, seed: Any, step: Any) -> tf.Tensor:
        """logits [batch, vocab] -> token ids [batch] (int32). ``seed``: a scalar or one per row;
        ``step``: the position, so that every step draws fresh noise."""
        batch, vocab = tf.shape(logits)[0], tf.shape(logits)[1]
        greedy = tf.argmax(logits, axis=-1, output_type=tf.int32)
        seeds = tf.stack([self._per_row(seed, batch, tf.int32), tf.fill([batch], tf.cast(step, tf.int32))], axis=1)
        uniform = tf.map_fn(
            lambda row_seed: tf.random.stateless_uniform([vocab], row_seed, minval=1e-9, maxval=1.0),
            seeds, fn_output_signature=tf.float32,
        )
        drawn = tf.argmax(self.filtered_logits(logits) - tf.math.log(-tf.math.log(uniform)), axis=-1, output_type=tf.int32)
        return tf.where(self._per_row(self.temperature, batch, tf.float32) > 0, drawn, greedy)


def _source_length(context: Any) -> tf.Tensor:
    """The source length of the attention weights (0 without a context, as for a language model)."""
    flat = tf.nest.flatten(context)
    return tf.shape(flat[0])[1] if flat else tf.constant(0)


def _history(first: tf.Tensor) -> tf.TensorArray:
    """A TensorArray of per-step values whose element 0 is ``first``, a placeholder step: stacking
    an empty list with a dynamic batch size fails, and a search may run no step (a limit of 0)."""
    return tf.TensorArray(first.dtype, size=1, dynamic_size=True, clear_after_read=False).write(0, first)


def sample(
    step_fn: StepFn,
    state: Any,
    context: Any,
    max_lengths: tf.Tensor,
    sampler: Sampler | None = None,
    seed: Any = 0,
    alpha: float = 0.0,
    start_ids: tf.Tensor | None = None,
    stop_at_eos: bool = True,
) -> DecodeResult:
    """One token per step chosen by ``sampler`` (greedy when None) until EOS or ``max_lengths``.

    ``seed`` is a scalar or one per row. ``stop_at_eos`` False lets EOS be one more token (a line break, for a language model trained on
    running text) so that generation runs to ``max_lengths``. ``alpha`` only scales the reported
    scores (as in beam search). Scores are the model's log-probabilities of the chosen tokens.
    """
    batch = tf.shape(max_lengths)[0]
    limit = tf.reduce_max(max_lengths)
    start_ids = tf.fill([batch], BOS_ID) if start_ids is None else tf.cast(start_ids, tf.int32)

    def cond(t, ids, state, finished, lengths, scores, tokens, weights):
        return tf.logical_and(t < limit, tf.logical_not(tf.reduce_all(finished)))

    def body(t, ids, state, finished, lengths, scores, tokens, weights):
        logits, state, attention = step_fn(ids, state, context)
        log_probs = tf.nn.log_softmax(tf.cast(logits, tf.float32))
        at_limit = t + 1 >= max_lengths
        if stop_at_eos:  # the last token is EOS; without EOS the text simply stops at the limit
            log_probs = tf.where(tf.logical_or(finished, at_limit)[:, None], _eos_only(tf.shape(log_probs)[1])[None, :], log_probs)
        if sampler is None:  # greedy without the sampler's sort over the vocabulary
            token = tf.argmax(log_probs, axis=-1, output_type=tf.int32)
        else:
            token = sampler(log_probs, seed, t)
        token_log_prob = tf.gather(log_probs, token, batch_dims=1)
        scores += tf.where(finished, 0.0, token_log_prob)
        lengths += tf.cast(tf.logical_not(finished), tf.int32)
        token = tf.where(finished, tf.zeros_like(token), token)  # padding after the end
        ended = tf.equal(token, EOS_ID) if stop_at_eos else at_limit
        finished = tf.logical_or(finished, ended)
        # Each step writes its own slot: no copy of the history per step.
        tokens = tokens.write(t + 1, token)
        weights = weights.write(t + 1, tf.cast(attention, tf.float32))
        next_ids = tf.where(finished, EOS_ID, token)  # a valid id for the padding steps
        return t + 1, next_ids, state, finished, lengths, scores, tokens, weights

    loop_vars = (
        tf.constant(0),
        start_ids,
        state,
        tf.zeros([batch], tf.bool),
        tf.zeros([batch], tf.int32),
        tf.zeros([batch], tf.float32),
        _history(tf.zeros([batch], tf.int32)),
        _history(tf.zeros([batch, _source_length(context)], tf.float32)),
    )
    _, _, _, _, lengths, scores, tokens, weights = _while(cond, body, loop_vars, limit)
    seqs = tf.transpose(tokens.stack()[1:])  # [batch, time]
    attn = tf.transpose(weights.stack()[1:], [1, 0, 2])  # [batch, time, source]
    scores = scores / length_penalty(lengths, alpha)
    return DecodeResult(seqs[:, None], lengths[:, None], scores[:, None], attn[:, None])


def greedy_search(
    step_fn: StepFn,
    state: Any,
    context: Any,
    max_lengths: tf.Tensor,
    alpha: float = 0.0,
    start_ids: tf.Tensor | None = None,
) -> DecodeResult:
    """Picks the most likely token at every step. Stops when every sentence has ended."""
    return sample(step_fn, state, context, max_lengths, None, 0, alpha, start_ids)


def _normalized(log_probs: tf.Tensor, lengths: tf.Tensor, alpha: float) -> tf.Tensor:
    """log_probs [rows] or [rows, n] divided by the length penalty of lengths [rows]."""
    if alpha == 0:  # dividing by 1 changes nothing
        return log_probs
    penalty = length_penalty(lengths, alpha)
    return log_probs / (penalty[:, None] if log_probs.shape.rank == 2 else penalty)


def _settled(finished: tf.Tensor, lengths: tf.Tensor, log_probs: tf.Tensor, max_lengths: tf.Tensor, k: int, alpha: float) -> tf.Tensor:
    """[batch*k]: True on the rows of sentences whose best finished hypothesis no live one can beat.

    Log-probabilities only fall (each step adds a log-probability <= 0), so a live hypothesis of
    log-probability p <= 0 ends at best with p itself, and p / penalty is largest at the largest
    penalty of a length it can still end at: the penalty is monotone in the length, so that is
    the next step's (alpha < 0) or the limit's (alpha >= 0). The candidates it spawns rank by
    p' / penalty(length) <= that bound too, so none of them can push the best finished one out of
    the beam: making the live ones end leaves the best hypothesis and its score as they are.
    """
    rows = tf.shape(finished)[0]
    scores = tf.reshape(tf.where(finished, _normalized(log_probs, lengths, alpha), -np.inf), [rows // k, k])
    largest = tf.maximum(length_penalty(lengths + 1, alpha), length_penalty(max_lengths, alpha))
    bounds = tf.reshape(tf.where(finished, -np.inf, log_probs / largest), [rows // k, k])
    # Strictly below: a tie could still reorder hypotheses of equal score.
    return tf.repeat(tf.reduce_max(bounds, axis=1) < tf.reduce_max(scores, axis=1), k)


def _backtrace(tokens: tf.Tensor, parents: tf.Tensor, weights: tf.Tensor, rows: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """The hypotheses in ``rows`` [n] after the last step, recovered from the per-step choices.

    tokens, parents [steps, batch*k] and weights [steps, batch*k, source] are what each step
    wrote (step 0 a placeholder; parent: the row that was extended; weights: the attention of the
    row before reordering). Returns ids [n, steps - 1] and attention [n, steps - 1, source]: one
    gather of row indices per step (what ``gather_tree`` does), then one gather of each.
    """
    # extended[s]: the row that step s extended on the way to each final row.
    extended = tf.scan(lambda row, parent: tf.gather(parent, row), parents, initializer=rows, reverse=True)
    # chosen[s]: the row that holds the hypothesis just after step s.
    chosen = tf.concat([extended[1:], rows[None]], axis=0)
    ids = tf.gather(tokens, chosen, batch_dims=1)[1:]
    attention = tf.gather(weights, extended, batch_dims=1)[1:]
    return tf.transpose(ids), tf.transpose(attention, [1, 0, 2])


def beam_search(
    step_fn: StepFn,
    state: Any,
    context: Any,
    max_lengths: tf.Tensor,
    beam_size: int,
    alpha: float = 0.6,
    start_ids: tf.Tensor | None = None,
) -> DecodeResult:
    """Batched beam search with GNMT length penalty ``alpha``.

    Keeps ``beam_size`` hypotheses per sentence; a hypothesis that emits EOS stays in the beam with
    its score frozen, competing with the live ones. Candidates are ranked by log-probability divided
    by the length penalty. EOS is forced at the length limit. A sentence whose best finished
    hypothesis no live one can still beat (see :func:`_settled`) has its live ones end with EOS
    (at the model's probability of it) at the next step; the search stops when every hypothesis
    of every sentence has ended. ``state`` and
    ``context`` come untiled, [batch, ...].
    """
    return _beam_search(step_fn, state, context, max_lengths, beam_size, alpha, start_ids, stop_early=True)


def _beam_search(
    step_fn: StepFn,
    state: Any,
    context: Any,
    max_lengths: tf.Tensor,
    k: int,
    alpha: float,
    start_ids: tf.Tensor | None,
    stop_early: bool,
) -> DecodeResult:
    """:func:`beam_search`; ``stop_early`` False runs every sentence until all its hypotheses end
    on their own or at the limit (the reference the early stop is tested against)."""
    batch = tf.shape(max_lengths)[0]
    state = tile_batch(state, k)
    context = tile_batch(context, k)
    flat_max = tf.repeat(max_lengths, k)
    limit = tf.reduce_max(max_lengths)
    # Only beam 0 is live at the start, so the first step does not pick the same token k times.
    initial_log_probs = tf.tile(tf.concat([[0.0], tf.fill([k - 1], _NEG)], axis=0), [batch])
    base = tf.repeat(tf.range(batch) * k, k)  # index of each sentence's first beam, per flat row

    def cond(t, ids, state, finished, lengths, log_probs, tokens, parents, weights):
        return tf.logical_and(t < limit, tf.logical_not(tf.reduce_all(finished)))

    def body(t, ids, state, finished, lengths, log_probs, tokens, parents, weights):
        logits, state, attention = step_fn(ids, state, context)
        step_log_probs = tf.nn.log_softmax(tf.cast(logits, tf.float32))
        vocab = tf.shape(step_log_probs)[1]
        if stop_early:  # a hypothesis cut short ends at the model's probability of EOS
            settled = _settled(finished, lengths, log_probs, flat_max, k, alpha)
            only_eos = tf.where(tf.equal(tf.range(vocab), EOS_ID)[None, :], step_log_probs, _NEG)
            step_log_probs = tf.where(settled[:, None], only_eos, step_log_probs)
        force_end = tf.logical_or(finished, t + 1 >= flat_max)  # EOS at no cost, as it always was
        step_log_probs = tf.where(force_end[:, None], _eos_only(vocab)[None, :], step_log_probs)
        total = log_probs[:, None] + step_log_probs  # [batch*k, vocab]
        new_lengths = lengths + tf.cast(tf.logical_not(finished), tf.int32)
        ranking = _normalized(total, new_lengths, alpha)
        _, top = tf.math.top_k(tf.reshape(ranking, [batch, k * vocab]), k=k)
        parent = base + tf.reshape(top // vocab, [-1])  # flat row of each chosen hypothesis' parent
        token = tf.reshape(top % vocab, [-1])
        log_probs = tf.gather_nd(total, tf.stack([parent, token], axis=1))
        was_finished = tf.gather(finished, parent)
        lengths = tf.gather(new_lengths, parent)
        token = tf.where(was_finished, tf.zeros_like(token), token)  # padding after EOS
        finished = tf.logical_or(was_finished, tf.equal(token, EOS_ID))
        state = tf.nest.map_structure(lambda s: tf.gather(s, parent), state)
        # The step's choices only; the hypotheses are read back once at the end (_backtrace).
        tokens = tokens.write(t + 1, token)
        parents = parents.write(t + 1, parent)
        weights = weights.write(t + 1, tf.cast(attention, tf.float32))
        # A finished hypothesis' token is padding, but the next step still needs a valid id.
        return t + 1, tf.where(finished, EOS_ID, token), state, finished, lengths, log_probs, tokens, parents, weights

    rows = tf.range(batch * k)
    loop_vars = (
        tf.constant(0),
        tf.fill([batch * k], BOS_ID) if start_ids is None else tile_batch(tf.cast(start_ids, tf.int32), k),
        state,
        tf.zeros([batch * k], tf.bool),
        tf.zeros([batch * k], tf.int32),
        initial_log_probs,
        _history(tf.zeros([batch * k], tf.int32)),
        _history(rows),  # the placeholder step keeps every row where it is
        _history(tf.zeros([batch * k, _source_length(context)], tf.float32)),
    )
    _, _, _, _, lengths, log_probs, tokens, parents, weights = _while(cond, body, loop_vars, limit)
    scores = tf.reshape(_normalized(log_probs, lengths, alpha), [batch, k])
    order = tf.argsort(scores, axis=1, direction="DESCENDING", stable=True)
    best_first = tf.reshape(order + tf.range(batch)[:, None] * k, [-1])
    ids, attention = _backtrace(tokens.stack(), parents.stack(), weights.stack(), best_first)

    def per_sentence(t: tf.Tensor) -> tf.Tensor:
        return tf.reshape(t, tf.concat([[batch, k], tf.shape(t)[1:]], axis=0))

    return DecodeResult(
        per_sentence(ids), per_sentence(tf.gather(lengths, best_first)), tf.gather(scores, order, batch_dims=1),
        per_sentence(attention),
    )


class NextWords(NamedTuple):
    """words [batch, k] (strings, "" past the words found), probabilities [batch, k], best first."""

    words: tf.Tensor
    probabilities: tf.Tensor


WORD_START = "▁"  # SentencePiece's word-boundary marker, "▁"


def next_word_search(
    step_fn: StepFn,
    state: Any,
    context: Any,
    start_ids: tf.Tensor,
    pieces: tf.Tensor,
    k: int | tf.Tensor,
    beam_size: int = 10,
    max_pieces: int = 8,
    whole_pieces: bool = False,
) -> NextWords:
    """The ``k`` most likely next whole words, whatever the model's units (words, subwords, chars).

    A word is a piece that starts with "▁" (SentencePiece's word start; a bare "▁", as in a
    character model, must be followed by a letter or digit), then pieces that continue it
    (starting with a letter, digit, mark or an apostrophe and a letter), ended by anything else
    (the next "▁" piece, punctuation, EOS). A small beam of ``beam_size`` partial words is expanded
    up to ``max_pieces`` pieces; each complete word scores P(pieces) x P(a boundary follows), and a
    word reached by several segmentations sums them. These events are disjoint, so probabilities
    sum to at most 1. ``pieces`` is the vocabulary's piece strings [vocab]; ``k`` <= ``beam_size``
    <= vocabulary size. ``whole_pieces`` (a word-level model): every piece but the reserved ones is a
    word, as it stands.

    Runs in the graph with core ops (regex, string joins, ``tf.while_loop``), like every search.
    """
    pieces = tf.convert_to_tensor(pieces, tf.string)
    vocab = tf.shape(pieces)[0]
    special = tf.range(vocab) < 4  # pad, unk, bos, eos
    bare = tf.equal(pieces, WORD_START)
    first = tf.strings.regex_full_match(pieces, WORD_START + r"[\pL\pN].*") | bare
    inner = tf.strings.regex_full_match(pieces, r"([\pL\pN\pM]|['’]\pL).*") & ~special
    boundary = ~inner & (~special | tf.equal(tf.range(vocab), EOS_ID))
    if whole_pieces:
        first = inner = ~special
        boundary = ~special | tf.equal(tf.range(vocab), EOS_ID)
        max_pieces = 1
    w, m = beam_size, max_pieces
    batch = tf.shape(start_ids)[0]
    base = tf.repeat(tf.range(batch) * w, w)

    logits, state, _ = step_fn(tf.cast(start_ids, tf.int32), state, context)
    log_probs = tf.where(first[None, :], tf.nn.log_softmax(tf.cast(logits, tf.float32)), _NEG)
    top_log_probs, top_ids = tf.math.top_k(log_probs, k=w)
    hyp_log_probs, last = tf.reshape(top_log_probs, [-1]), tf.reshape(top_ids, [-1])
    has_body = tf.logical_not(tf.gather(bare, last))
    seqs = tf.pad(last[:, None], [[0, 0], [0, m - 1]])  # [batch*w, m] pieces, PAD after the end
    state, context = tile_batch(state, w), tile_batch(context, w)

    def body(t, last, state, hyp_log_probs, has_body, seqs, ended_log_probs, ended_seqs):
        logits, state, _ = step_fn(last, state, context)
        step_log_probs = tf.nn.log_softmax(tf.cast(logits, tf.float32))
        end = tf.reduce_logsumexp(tf.where(boundary[None, :], step_log_probs, _NEG), axis=-1)
        ended_log_probs = ended_log_probs.write(t, tf.where(has_body, hyp_log_probs + end, _NEG))
        ended_seqs = ended_seqs.write(t, seqs)
        longer = hyp_log_probs[:, None] + tf.where(inner[None, :], step_log_probs, _NEG)
        top_log_probs, top = tf.math.top_k(tf.reshape(longer, [batch, w * vocab]), k=w)
        parent = base + tf.reshape(top // vocab, [-1])
        token = tf.reshape(top % vocab, [-1])
        column = tf.one_hot(t + 1, m, dtype=tf.int32)[None, :]  # all zeros once t + 1 == m
        seqs = tf.gather(seqs, parent) * (1 - column) + token[:, None] * column
        state = tf.nest.map_structure(lambda s: tf.gather(s, parent), state)
        hyp_log_probs = tf.reshape(top_log_probs, [-1])
        return t + 1, token, state, hyp_log_probs, tf.ones_like(has_body), seqs, ended_log_probs, ended_seqs

    loop_vars = (
        tf.constant(0), last, state, hyp_log_probs, has_body, seqs,
        tf.TensorArray(tf.float32, size=m), tf.TensorArray(tf.int32, size=m),
    )
    *_, ended_log_probs, ended_seqs = tf.while_loop(lambda t, *_: t < m, body, loop_vars)
    # [m steps, batch*w] -> [batch, w*m] candidates
    candidate_log_probs = tf.reshape(tf.transpose(ended_log_probs.stack()), [batch, w * m])
    candidate_seqs = tf.reshape(tf.transpose(ended_seqs.stack(), [1, 0, 2]), [batch, w * m, m])
    texts = tf.strings.reduce_join(tf.gather(tf.where(special, "", pieces), candidate_seqs), axis=-1)
    words = tf.strings.regex_replace(texts, "^" + WORD_START, "")
    valid = candidate_log_probs > _NEG / 2
    probs = tf.where(valid, tf.exp(candidate_log_probs), 0.0)
    same = tf.equal(words[:, :, None], words[:, None, :]) & valid[:, :, None] & valid[:, None, :]
    total = tf.reduce_sum(tf.where(same, probs[:, None, :], 0.0), axis=-1)
    n = w * m
    earlier = tf.range(n)[None, :] < tf.range(n)[:, None]  # [i, j]: j comes before i
    first_seen = tf.logical_not(tf.reduce_any(same & earlier[None], axis=-1))
    ranking = tf.where(valid & first_seen, total, -1.0)
    top_probs, top = tf.math.top_k(ranking, k=tf.minimum(tf.cast(k, tf.int32), n))
    found = top_probs > 0
    return NextWords(tf.where(found, tf.gather(words, top, batch_dims=1), ""), tf.maximum(top_probs, 0.0))


def decode(
    step_fn: StepFn,
    state: Any,
    context: Any,
    max_lengths: tf.Tensor,
    beam_size: int = 1,
    alpha: float = 0.6,
    start_ids: tf.Tensor | None = None,
) -> DecodeResult:
    """Greedy search for ``beam_size == 1``, beam search otherwise."""
    if beam_size == 1:
        return greedy_search(step_fn, state, context, max_lengths, alpha, start_ids)
    return beam_search(step_fn, state, context, max_lengths, beam_size, alpha, start_ids)
