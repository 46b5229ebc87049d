"""Decoding strategies, apart from any model: greedy search, sampling and batched beam search.

Every strategy drives a ``step_fn(ids, state, context) -> (logits, state, attention)`` with core
TensorFlow ops only (``tf.while_loop``, ``tf.gather``, ``tf.math.top_k``): no Python per step, no
``py_function``, nothing outside core TF, so the same code runs eagerly, inside ``tf.function`` and
inside an exported SavedModel (TensorFlow Serving runs core ops only).

The next-word search of language models is :mod:`nmt.next_word`, over the same step functions.

Sampling, greedy search and beam search share one loop, :func:`_search_loop` (feed the ids, let a
strategy choose each row's token and parent, keep lengths, finished flags and padding, write each
step's choices once); a strategy (:class:`_Sampling`, :class:`_Beam`) only chooses and reads its
hypotheses back at the end. Greedy search is sampling at temperature 0, one row per input.
Each step's attention weights are recorded and traced back only when a search is asked for them
(``with_attention``: attention maps); otherwise :attr:`DecodeResult.attention` is None.

``state`` is gathered when beams are reordered; ``context`` (the encoder memory) is only tiled.
Every search starts by feeding ``start_ids`` (BOS by default; a language model continuing a prompt
passes the prompt's last token, with ``state`` the state before it).
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import tensorflow as tf

from nmt.constants import BOS_ID, EOS_ID, LOG_ZERO

if TYPE_CHECKING:
    from nmt.samplers import Sampler

StepFn = Callable[[tf.Tensor, Any, Any], tuple[tf.Tensor, Any, tf.Tensor]]


class DecodeResult(NamedTuple):
    """Hypotheses per input, best first.

    ids [batch, n, time] (EOS included, then padding), lengths [batch, n] (with EOS),
    scores [batch, n] (log-probability divided by the length penalty), attention
    [batch, n, time, source] (the weights used at each output step) when the search was asked for
    it (``with_attention``), else None: recording and backtracing [rows, source] per step costs
    time that only attention maps need, and None cannot be mistaken for weights.
    """

    ids: tf.Tensor
    lengths: tf.Tensor
    scores: tf.Tensor
    attention: tf.Tensor | None = None


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
    return tf.where(tf.range(vocab_size) == EOS_ID, 0.0, LOG_ZERO)


def _shape_invariant(t: tf.Tensor | tf.TensorArray) -> tf.TensorShape:
    """Any size in every dimension (a step function may return less static shape than it got)."""
    if isinstance(t, tf.TensorArray):
        return tf.TensorShape(None)
    return tf.TensorShape([None] * t.shape.rank)


def _while(cond: Callable, body: Callable, loop_vars: tuple, limit: tf.Tensor) -> tuple:
    invariants = tf.nest.map_structure(_shape_invariant, loop_vars)
    return tf.while_loop(cond, body, loop_vars, shape_invariants=invariants, maximum_iterations=limit)


def _source_length(context: Any) -> tf.Tensor:
    """The source length of the attention weights (0 without a context, as for a language model)."""
    flat = tf.nest.flatten(context)
    return tf.shape(flat[0])[1] if flat else tf.constant(0)


def _history(first: tf.Tensor) -> tf.TensorArray:
    """A TensorArray of per-step values whose element 0 is ``first``, a placeholder step: stacking
    an empty list with a dynamic batch size fails, and a search may run no step (a limit of 0)."""
    return tf.TensorArray(first.dtype, size=1, dynamic_size=True, clear_after_read=False).write(0, first)


def _forced_eos(log_probs: tf.Tensor, rows: tf.Tensor) -> tf.Tensor:
    """log_probs [rows, vocab] with EOS the only choice, at no cost, where ``rows`` [rows] is True."""
    return tf.where(rows[:, None], _eos_only(tf.shape(log_probs)[1])[None, :], log_probs)


class _Searched(NamedTuple):
    """What :func:`_search_loop` leaves: per row, lengths [rows] (with EOS) and summed
    log-probabilities [rows]; per step (step 0 the placeholder), the tokens [steps, rows],
    attention [steps, rows, source] where it was asked for (else None) and, where the strategy
    reorders rows, parents [steps, rows]."""

    lengths: tf.Tensor
    scores: tf.Tensor
    tokens: tf.Tensor
    weights: tf.Tensor | None
    parents: tf.Tensor | None
    extra: Any = ()  # the strategy's own per-row state after the last step (:meth:`_Strategy.initial_extra`)


class _Strategy(abc.ABC):
    """How a search chooses each step's tokens, apart from the loop that runs the steps
    (:func:`_search_loop`) and from the model, which only exposes its step function (OpenNMT-tf's
    split). Rows are the search's hypotheses: one per input when sampling, k per input in a beam.
    ``max_lengths`` [rows]: each row's length limit, with EOS."""

    reorders = False  # True: rows follow their parents' hypotheses, kept as parent pointers

    def __init__(self, max_lengths: tf.Tensor) -> None:
        self.max_lengths = max_lengths

    def initial_scores(self, rows: tf.Tensor) -> tf.Tensor:
        return tf.zeros([rows], tf.float32)

    def initial_extra(self) -> Any:
        """Per-row state of the strategy's own (a constrained search's progress), carried by the
        loop; () for the plain searches, which so run the loop they always ran."""
        return ()

    @abc.abstractmethod
    def choose(self, t: tf.Tensor, log_probs: tf.Tensor, finished: tf.Tensor, lengths: tf.Tensor,
               scores: tf.Tensor, extra: Any) -> tuple[tf.Tensor, tf.Tensor | None, tf.Tensor, Any]:
        """The step's log_probs [rows, vocab] and the rows so far -> token [rows] of each row,
        parent [rows] (the row it extends; None when rows keep their place), its new score and its
        new ``extra`` (already the chosen rows')."""

    def ended(self, t: tf.Tensor, token: tf.Tensor) -> tf.Tensor:
        """[rows]: the rows that end with this step's token (padding on rows already finished)."""
        return tf.equal(token, EOS_ID)

    @abc.abstractmethod
    def result(self, searched: _Searched) -> DecodeResult:
        """The search's hypotheses, read back from what the loop recorded."""


def _search_loop(step_fn: StepFn, state: Any, context: Any, strategy: _Strategy,
                 start_ids: tf.Tensor | None, with_attention: bool) -> _Searched:
    """The loop every search shares: feed the ids, let ``strategy`` choose each row's token (and
    parent), keep the lengths, finished flags and padding, and write each step's choices once;
    stop when every row has finished or at the longest limit. ``state``, ``context`` and
    ``start_ids`` (BOS when None) come with one row per hypothesis. The attention weights of each
    step are recorded only ``with_attention`` (the step function computes them either way)."""
    rows = tf.shape(strategy.max_lengths)[0]
    limit = tf.reduce_max(strategy.max_lengths)

    def cond(t, ids, state, finished, lengths, scores, extra, history):
        return tf.logical_and(t < limit, tf.logical_not(tf.reduce_all(finished)))

    def body(t, ids, state, finished, lengths, scores, extra, history):
        logits, state, attention = step_fn(ids, state, context)
        log_probs = tf.nn.log_softmax(tf.cast(logits, tf.float32))
        token, parent, scores, extra = strategy.choose(t, log_probs, finished, lengths, scores, extra)
        step = {"tokens": token}
        if with_attention:
            step["weights"] = tf.cast(attention, tf.float32)
        if strategy.reorders:  # each row now continues its parent's hypothesis
            finished, lengths = tf.gather(finished, parent), tf.gather(lengths, parent)
            state = tf.nest.map_structure(lambda s: tf.gather(s, parent), state)
            step["parents"] = parent
        lengths += tf.cast(tf.logical_not(finished), tf.int32)
        step["tokens"] = tf.where(finished, tf.zeros_like(token), token)  # padding after the end
        finished = tf.logical_or(finished, strategy.ended(t, step["tokens"]))
        # Each step writes its own slot: no copy of the history per step; a reordering search
        # reads its hypotheses back once at the end (_backtrace).
        history = {name: history[name].write(t + 1, step[name]) for name in history}
        # A finished row's token is padding, but the next step still needs a valid id.
        return t + 1, tf.where(finished, EOS_ID, step["tokens"]), state, finished, lengths, scores, extra, history

    history = {"tokens": _history(tf.zeros([rows], tf.int32))}
    if with_attention:
        history["weights"] = _history(tf.zeros([rows, _source_length(context)], tf.float32))
    if strategy.reorders:
        history["parents"] = _history(tf.range(rows))  # the placeholder step keeps every row in place
    loop_vars = (
        tf.constant(0),
        tf.fill([rows], BOS_ID) if start_ids is None else tf.cast(start_ids, tf.int32),
        state,
        tf.zeros([rows], tf.bool),
        tf.zeros([rows], tf.int32),
        strategy.initial_scores(rows),
        strategy.initial_extra(),
        history,
    )
    _, _, _, _, lengths, scores, extra, history = _while(cond, body, loop_vars, limit)
    parents = history["parents"].stack() if strategy.reorders else None
    weights = history["weights"].stack() if with_attention else None
    return _Searched(lengths, scores, history["tokens"].stack(), weights, parents, extra)


class _Sampling(_Strategy):
    """One hypothesis per input: the token ``sampler`` draws (the most likely one when None)."""

    def __init__(self, max_lengths: tf.Tensor, sampler: Sampler | None, seed: Any, alpha: float,
                 stop_at_eos: bool) -> None:
        super().__init__(max_lengths)
        self.sampler, self.seed, self.alpha, self.stop_at_eos = sampler, seed, alpha, stop_at_eos

    def choose(self, t, log_probs, finished, lengths, scores, extra):
        # The last token is EOS, at no cost after the end and at the limit; without EOS the text
        # simply stops at the limit.
        forced = tf.logical_and(self.stop_at_eos, tf.logical_or(finished, t + 1 >= self.max_lengths))
        if self.sampler is None:  # greedy: the argmax, with EOS put in on forced rows alone
            token = tf.where(forced, EOS_ID, tf.argmax(log_probs, axis=-1, output_type=tf.int32))
            token_log_prob = tf.where(forced, 0.0, tf.gather(log_probs, token, batch_dims=1))
        else:
            log_probs = _forced_eos(log_probs, forced)
            token = self.sampler(log_probs, self.seed, t)
            token_log_prob = tf.gather(log_probs, token, batch_dims=1)
        return token, None, scores + tf.where(finished, 0.0, token_log_prob), extra

    def ended(self, t, token):
        return tf.equal(token, EOS_ID) if self.stop_at_eos else t + 1 >= self.max_lengths

    def result(self, searched: _Searched) -> DecodeResult:
        seqs = tf.transpose(searched.tokens[1:])  # [batch, time]
        attn = None
        if searched.weights is not None:
            attn = tf.transpose(searched.weights[1:], [1, 0, 2])[:, None]  # [batch, 1, time, source]
        scores = searched.scores / length_penalty(searched.lengths, self.alpha)
        return DecodeResult(seqs[:, None], searched.lengths[:, None], scores[:, None], attn)


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
    with_attention: bool = False,
) -> DecodeResult:
    """One token per step chosen by ``sampler`` (greedy when None) until EOS or ``max_lengths``.

    ``seed`` is a scalar or one per row. ``stop_at_eos`` False lets EOS be one more token (a line
    break, for a language model trained on running text) so that generation runs to ``max_lengths``.
    ``alpha`` only scales the reported scores (as in beam search). Scores are the model's
    log-probabilities of the chosen tokens. ``with_attention``: also return each step's attention
    weights (:class:`DecodeResult`).
    """
    strategy = _Sampling(max_lengths, sampler, seed, alpha, stop_at_eos)
    return strategy.result(_search_loop(step_fn, state, context, strategy, start_ids, with_attention))


def greedy_search(
    step_fn: StepFn,
    state: Any,
    context: Any,
    max_lengths: tf.Tensor,
    alpha: float = 0.0,
    start_ids: tf.Tensor | None = None,
    with_attention: bool = False,
) -> DecodeResult:
    """Picks the most likely token at every step. Stops when every sentence has ended."""
    return sample(step_fn, state, context, max_lengths, None, 0, alpha, start_ids, with_attention=with_attention)


def _normalized(log_probs: tf.Tensor, lengths: tf.Tensor, alpha: float) -> tf.Tensor:
    """log_probs [rows] or [rows, n] divided by the length penalty of lengths [rows]."""
    if alpha == 0:  # dividing by 1 changes nothing
        return log_probs
    penalty = length_penalty(lengths, alpha)
    return log_probs / (penalty[:, None] if log_probs.shape.rank == 2 else penalty)


def _settled(
    finished: tf.Tensor, lengths: tf.Tensor, log_probs: tf.Tensor, max_lengths: tf.Tensor, k: int, alpha: float
) -> tf.Tensor:
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


def _backtrace(
    tokens: tf.Tensor, parents: tf.Tensor, weights: tf.Tensor | None, rows: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor | None]:
    """The hypotheses in ``rows`` [n] after the last step, recovered from the per-step choices.

    tokens, parents [steps, batch*k] and weights [steps, batch*k, source] are what each step
    wrote (step 0 a placeholder; parent: the row that was extended; weights: the attention of the
    row before reordering; None when not recorded). Returns ids [n, steps - 1] and attention
    [n, steps - 1, source] (None without weights): one gather of row indices per step (what
    ``gather_tree`` does), then one gather of each.
    """
    # extended[s]: the row that step s extended on the way to each final row.
    extended = tf.scan(lambda row, parent: tf.gather(parent, row), parents, initializer=rows, reverse=True)
    # chosen[s]: the row that holds the hypothesis just after step s.
    chosen = tf.concat([extended[1:], rows[None]], axis=0)
    ids = tf.transpose(tf.gather(tokens, chosen, batch_dims=1)[1:])
    if weights is None:
        return ids, None
    return ids, tf.transpose(tf.gather(weights, extended, batch_dims=1)[1:], [1, 0, 2])


# Columns per block of _row_top_k: wide enough that the max over blocks costs a fraction of a
# pass, narrow enough that the k best blocks hold few columns (64 measured fastest at 8,000).
TOP_K_BLOCK = 64


def _row_top_k(values: tf.Tensor, k: int) -> tuple[tf.Tensor, tf.Tensor]:
    """``tf.math.top_k(values, k)`` of values [rows, n]: the same values and indices, ties to the
    lower index, in a fraction of its time on wide rows (a vocabulary).

    A row's k largest values lie in its k blocks of :data:`TOP_K_BLOCK` columns with the largest
    maxima (ties to the lower block, as to the lower index): one max per block, a top-k of the
    blocks, then a top-k over those blocks' columns in column order.
    """
    width = values.shape[1]
    if width is None or width < 4 * k * TOP_K_BLOCK:  # narrow rows: the kernel alone is as fast
        return tf.math.top_k(values, k=k)
    blocks = -(-width // TOP_K_BLOCK)
    if blocks * TOP_K_BLOCK != width:  # the last block's padding is never above a real value
        values = tf.pad(values, [[0, 0], [0, blocks * TOP_K_BLOCK - width]], constant_values=-np.inf)
    grouped = tf.reshape(values, [-1, blocks, TOP_K_BLOCK])
    _, best_blocks = tf.math.top_k(tf.reduce_max(grouped, axis=2), k=k)
    best_blocks = tf.sort(best_blocks, axis=1)  # column order, so that ties keep the lower index
    columns = tf.reshape(tf.gather(grouped, best_blocks, batch_dims=1), [-1, k * TOP_K_BLOCK])
    top, at = tf.math.top_k(columns, k=k)
    return top, tf.gather(best_blocks, at // TOP_K_BLOCK, batch_dims=1) * TOP_K_BLOCK + at % TOP_K_BLOCK


class _Beam(_Strategy):
    """k hypotheses per input (rows b*k .. b*k+k-1 for input b): the k best extensions of the
    input's rows, ranked by log-probability divided by the length penalty of ``alpha``."""

    reorders = True

    def __init__(self, max_lengths: tf.Tensor, k: int, alpha: float, stop_early: bool) -> None:
        super().__init__(tf.repeat(max_lengths, k))
        self.batch, self.k, self.alpha, self.stop_early = tf.shape(max_lengths)[0], k, alpha, stop_early
        self.base = tf.repeat(tf.range(self.batch) * k, k)  # each input's first row, per row

    def initial_scores(self, rows: tf.Tensor) -> tf.Tensor:
        # Only beam 0 is live at the start, so the first step does not pick the same token k times.
        return tf.tile(tf.concat([[0.0], tf.fill([self.k - 1], LOG_ZERO)], axis=0), [self.batch])

    def choose(self, t, log_probs, finished, lengths, scores, extra):
        ranking, token, total, _ = self._candidates(t, log_probs, finished, lengths, scores)
        n = ranking.shape[1]
        _, top = tf.math.top_k(tf.reshape(ranking, [self.batch, self.k * n]), k=self.k)
        chosen = tf.reshape(top + tf.range(self.batch)[:, None] * (self.k * n), [-1])
        parent = self.base + tf.reshape(top // n, [-1])  # flat row of each chosen hypothesis' parent
        return tf.gather(tf.reshape(token, [-1]), chosen), parent, tf.gather(tf.reshape(total, [-1]), chosen), extra

    def _candidates(self, t, log_probs, finished, lengths, scores) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
        """Each row's best extensions, n = min(k, vocab) of them: their ranking (normalised score),
        token and summed log-probability [rows, n], and [rows] whether the row may only end."""
        # A row that may only end offers EOS (at no cost after the end and at the limit, at the
        # model's probability of it when its sentence is settled) and nothing else.
        forced = tf.logical_or(finished, t + 1 >= self.max_lengths)
        ending = forced
        if self.stop_early:
            ending = tf.logical_or(forced, _settled(finished, lengths, scores, self.max_lengths, self.k, self.alpha))
        new_lengths = lengths + tf.cast(tf.logical_not(finished), tf.int32)
        total = scores[:, None] + log_probs  # [batch*k, vocab]
        # The k best of a sentence's k * vocab extensions are among each row's own k best, so one
        # top-k per row and one over the k * k candidates replace a top-k over k * vocab columns.
        n = self.k if log_probs.shape[1] is None else min(self.k, log_probs.shape[1])
        ranking, token = _row_top_k(_normalized(total, new_lengths, self.alpha), n)  # [batch*k, n]
        candidate_total = tf.gather(total, token, batch_dims=1)
        # An ending row's candidates, as the whole-vocabulary ranking orders them: EOS, then
        # the lowest other ids at LOG_ZERO.
        ending_log_probs = tf.concat(
            [tf.where(forced, 0.0, log_probs[:, EOS_ID])[:, None], tf.fill([tf.shape(total)[0], n - 1], LOG_ZERO)], 1)
        ending_total = scores[:, None] + ending_log_probs
        ending_token = tf.constant([EOS_ID] + [i for i in range(n + 1) if i != EOS_ID][: n - 1], tf.int32)
        ranking = tf.where(ending[:, None], _normalized(ending_total, new_lengths, self.alpha), ranking)
        token = tf.where(ending[:, None], ending_token[None, :], token)
        candidate_total = tf.where(ending[:, None], ending_total, candidate_total)
        return ranking, token, candidate_total, ending

    def _best_first(self, scores: tf.Tensor, searched: _Searched) -> tf.Tensor:
        """[batch, k]: each input's hypotheses in the order the result lists them (scores [batch, k])."""
        return tf.argsort(scores, axis=1, direction="DESCENDING", stable=True)

    def result(self, searched: _Searched) -> DecodeResult:
        batch, k = self.batch, self.k
        scores = tf.reshape(_normalized(searched.scores, searched.lengths, self.alpha), [batch, k])
        order = self._best_first(scores, searched)
        best_first = tf.reshape(order + tf.range(batch)[:, None] * k, [-1])
        ids, attention = _backtrace(searched.tokens, searched.parents, searched.weights, best_first)

        def per_sentence(t: tf.Tensor) -> tf.Tensor:
            return tf.reshape(t, tf.concat([[batch, k], tf.shape(t)[1:]], axis=0))

        return DecodeResult(
            per_sentence(ids), per_sentence(tf.gather(searched.lengths, best_first)),
            tf.gather(scores, order, batch_dims=1), None if attention is None else per_sentence(attention),
        )


def beam_search(
    step_fn: StepFn,
    state: Any,
    context: Any,
    max_lengths: tf.Tensor,
    beam_size: int,
    alpha: float = 0.6,
    start_ids: tf.Tensor | None = None,
    with_attention: bool = False,
) -> DecodeResult:
    """Batched beam search with GNMT length penalty ``alpha``.

    Keeps ``beam_size`` hypotheses per sentence; a hypothesis that emits EOS stays in the beam with
    its score frozen, competing with the live ones. Candidates are ranked by log-probability divided
    by the length penalty. EOS is forced at the length limit. A sentence whose best finished
    hypothesis no live one can still beat (see :func:`_settled`) has its live ones end with EOS
    (at the model's probability of it) at the next step; the search stops when every hypothesis
    of every sentence has ended. ``state`` and ``context`` come untiled, [batch, ...].
    ``with_attention``: also return each hypothesis' attention weights (:class:`DecodeResult`).
    """
    return _beam_search(step_fn, state, context, max_lengths, beam_size, alpha, start_ids, stop_early=True,
                        with_attention=with_attention)


def _beam_search(
    step_fn: StepFn,
    state: Any,
    context: Any,
    max_lengths: tf.Tensor,
    k: int,
    alpha: float,
    start_ids: tf.Tensor | None,
    stop_early: bool,
    with_attention: bool = False,
) -> DecodeResult:
    """:func:`beam_search`; ``stop_early`` False runs every sentence until all its hypotheses end
    on their own or at the limit (the reference the early stop is tested against)."""
    strategy = _Beam(max_lengths, k, alpha, stop_early)
    if start_ids is not None:
        start_ids = tile_batch(tf.cast(start_ids, tf.int32), k)
    searched = _search_loop(step_fn, tile_batch(state, k), tile_batch(context, k), strategy, start_ids,
                            with_attention)
    return strategy.result(searched)


def decode(
    step_fn: StepFn,
    state: Any,
    context: Any,
    max_lengths: tf.Tensor,
    beam_size: int = 1,
    alpha: float = 0.6,
    start_ids: tf.Tensor | None = None,
    with_attention: bool = False,
) -> DecodeResult:
    """Greedy search for ``beam_size == 1``, beam search otherwise; with the attention weights
    only ``with_attention``."""
    if beam_size == 1:
        return greedy_search(step_fn, state, context, max_lengths, alpha, start_ids, with_attention)
    return beam_search(step_fn, state, context, max_lengths, beam_size, alpha, start_ids, with_attention)
