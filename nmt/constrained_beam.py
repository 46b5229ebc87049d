"""The terminology search: a beam search whose hypotheses must contain given phrases and must not
contain others, as a strategy of :mod:`nmt.decoding`'s one search loop (its own module, so that the
plain searches stay as they were and :mod:`nmt.decoding` stays about them).

:mod:`nmt.constraints` turns text into :class:`Constraints`; :meth:`nmt.translator.Translator.search`
runs :func:`constrained_beam_search` when a batch has terminology.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import tensorflow as tf

from nmt.constants import EOS_ID, LOG_ZERO
from nmt.decoding import DecodeResult, StepFn, _Beam, _normalized, _search_loop, _Searched, tile_batch


class Constraints(NamedTuple):
    """Terminology for :func:`beam_search`, per input (``nmt.constraints`` builds it from text).

    tokens [batch, T]: the pieces of the phrases the output must contain, one phrase after the
    other; phrases [batch, T]: the phrase each belongs to (-1: padding). avoid [batch, A, L]: the
    pieces of phrases the output must not contain, avoid_lengths [batch, A] (0: padding);
    banned [batch, vocab]: pieces never to output (each holds an avoided phrase in its text).
    """

    tokens: tf.Tensor
    phrases: tf.Tensor
    avoid: tf.Tensor
    avoid_lengths: tf.Tensor
    banned: tf.Tensor


class _ConstrainedBeam(_Beam):
    """A beam search whose hypotheses must contain given phrases and must not contain others:
    Post & Vilar's (2018) dynamic beam allocation, vectorized over the batch as Hu et al. (2019).

    Each hypothesis tracks which constraint pieces it has met and the phrase it is inside of (it
    must go on with that phrase's next piece, or the phrase's progress is undone). Each step's
    candidates are the k best extensions of every row (as :class:`_Beam`'s) plus, per row, the
    pieces that advance a constraint: the in-progress phrase's next piece, or the first piece of any
    phrase not yet met. The beam is then shared among the banks (hypotheses by how many constraint
    pieces they have met): the best candidate of each bank, then the second best of each, and so on,
    higher banks first at a tie (equal shares; a bank's unused share goes to the others). EOS is
    open only to hypotheses that met every constraint (at the length limit all end, and those that
    did are listed first). A piece that would complete an avoided phrase, or holds one, is never
    chosen.
    """

    def __init__(self, max_lengths: tf.Tensor, k: int, alpha: float, stop_early: bool,
                 constraints: Constraints) -> None:
        super().__init__(max_lengths, k, alpha, stop_early)
        rows = tf.shape(self.max_lengths)[0]
        self.tokens = tf.repeat(tf.cast(constraints.tokens, tf.int32), k, axis=0)  # [rows, T]
        phrases = tf.repeat(tf.cast(constraints.phrases, tf.int32), k, axis=0)
        self.valid = phrases >= 0
        self.phrases = phrases
        width = tf.shape(phrases)[1]
        same_as_previous = tf.concat([tf.zeros([rows, 1], tf.bool), tf.equal(phrases[:, 1:], phrases[:, :-1])], 1)
        self.starts = self.valid & tf.logical_not(same_as_previous)
        continues = tf.concat([same_as_previous[:, 1:], tf.zeros([rows, 1], tf.bool)], 1) & self.valid
        self.next = tf.where(continues, tf.range(width)[None, :] + 1, -1)  # the phrase's next piece; -1 after its last
        self.needed = tf.reduce_sum(tf.cast(self.valid, tf.int32), axis=1)
        self.avoid = tf.repeat(tf.cast(constraints.avoid, tf.int32), k, axis=0)  # [rows, A, L]
        self.avoid_lengths = tf.repeat(tf.cast(constraints.avoid_lengths, tf.int32), k, axis=0)
        self.banned = tf.repeat(tf.cast(constraints.banned, tf.bool), k, axis=0)

    def initial_extra(self) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        rows = tf.shape(self.max_lengths)[0]
        window = tf.maximum(tf.shape(self.avoid)[2] - 1, 0)  # the pieces an avoided phrase's last one follows
        return (tf.zeros(tf.shape(self.tokens), tf.bool), tf.fill([rows], -1), tf.fill([rows, window], -1))

    def _avoided(self, recent: tf.Tensor) -> tf.Tensor:
        """[rows, A]: the piece that would complete each avoided phrase after the row's ``recent``
        [rows, W] pieces (-1 where none would)."""
        window = tf.shape(recent)[1]
        prefix = self.avoid_lengths - 1  # [rows, A]
        # Window slot i holds the piece W - i steps back; phrase piece j must sit at i = W - prefix + j.
        j = tf.range(window)[None, None, :] - (window - prefix)[:, :, None]  # [rows, A, W]
        relevant = j >= 0
        expected = tf.gather(self.avoid, tf.maximum(j, 0), batch_dims=2)
        matches = tf.reduce_all(tf.logical_not(relevant) | tf.equal(recent[:, None, :], expected), axis=2)
        last = tf.gather(self.avoid, tf.maximum(prefix, 0)[:, :, None], batch_dims=2)[:, :, 0]
        return tf.where(matches & (self.avoid_lengths > 0), last, -1)

    def _advance(self, met: tf.Tensor, progress: tf.Tensor, token: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Each row's constraint state after each of its candidate tokens: met [rows, T] and
        progress [rows] with token [rows, M] -> met [rows, M, T], progress [rows, M]."""
        width = tf.shape(self.tokens)[1]
        position = tf.range(width)[None, None, :]
        at = tf.maximum(progress, 0)
        in_phrase = (progress >= 0)[:, None]
        goes_on = in_phrase & tf.equal(token, tf.gather(self.tokens, at, batch_dims=1)[:, None])  # [rows, M]
        # Leaving a phrase half-written undoes its progress.
        phrase = tf.gather(self.phrases, at, batch_dims=1)
        undone = (in_phrase & tf.logical_not(goes_on))[:, :, None] & tf.equal(self.phrases, phrase[:, None])[:, None, :]
        met = tf.logical_and(met[:, None, :], tf.logical_not(undone))
        met = met | (goes_on[:, :, None] & tf.equal(position, at[:, None, None]))
        progress = tf.where(goes_on, tf.gather(self.next, at, batch_dims=1)[:, None], -1)
        # Otherwise the token may start a phrase not yet met (the first such one).
        starts = (tf.logical_not(goes_on)[:, :, None] & self.starts[:, None, :] & tf.logical_not(met)
                  & tf.equal(self.tokens[:, None, :], token[:, :, None]))
        started = tf.reduce_any(starts, axis=2)
        first = tf.argmax(tf.cast(starts, tf.int32), axis=2, output_type=tf.int32)
        met = met | (started[:, :, None] & tf.equal(position, first[:, :, None]))
        progress = tf.where(started, tf.gather(self.next, first, batch_dims=1), progress)
        return met, progress

    def choose(self, t, log_probs, finished, lengths, scores, extra):
        met, progress, recent = extra
        vocab = tf.shape(log_probs)[1]
        rows = tf.shape(log_probs)[0]
        # Closed: pieces holding an avoided phrase, pieces completing one, and EOS before every
        # constraint is met.
        avoided = self._avoided(recent)
        where = tf.where(avoided >= 0)
        closed = tf.scatter_nd(tf.stack([where[:, 0], tf.cast(tf.gather_nd(avoided, where), tf.int64)], 1),
                               tf.ones([tf.shape(where)[0]], tf.int32), tf.cast([rows, vocab], tf.int64)) > 0
        unmet = tf.reduce_sum(tf.cast(met, tf.int32), axis=1) < self.needed
        closed = closed | self.banned | (unmet[:, None] & tf.equal(tf.range(vocab), EOS_ID)[None, :])
        log_probs = tf.where(closed, LOG_ZERO, log_probs)
        ranking, token, total, ending = self._candidates(t, log_probs, finished, lengths, scores)
        # The pieces that advance a constraint, where the row's own best do not hold them already.
        width = tf.shape(self.tokens)[1]
        position = tf.range(width)[None, :]
        offered = tf.where((progress >= 0)[:, None], tf.equal(position, progress[:, None]),
                           self.starts & tf.logical_not(met))
        offered &= self.valid & tf.logical_not(ending)[:, None]
        offered &= tf.logical_not(tf.reduce_any(tf.equal(self.tokens[:, :, None], token[:, None, :]), axis=2))
        earlier_same = tf.equal(self.tokens[:, :, None], self.tokens[:, None, :]) & offered[:, None, :] & (
            position[:, None, :] < position[:, :, None])
        offered &= tf.logical_not(tf.reduce_any(earlier_same, axis=2))  # one candidate per distinct piece
        offered_total = scores[:, None] + tf.gather(log_probs, self.tokens, batch_dims=1)
        offered &= offered_total > LOG_ZERO / 2  # neither closed nor on a dead row
        new_lengths = lengths + tf.cast(tf.logical_not(finished), tf.int32)
        offered_ranking = tf.where(offered, _normalized(offered_total, new_lengths, self.alpha), -np.inf)
        token = tf.concat([token, self.tokens], axis=1)  # [rows, M]
        total = tf.concat([total, offered_total], axis=1)
        ranking = tf.concat([ranking, offered_ranking], axis=1)
        candidates = tf.shape(token)[1]
        new_met, new_progress = self._advance(met, progress, token)
        bank = tf.reduce_sum(tf.cast(new_met, tf.int32), axis=2)  # [rows, M]
        # Share the beam among the banks: rank each candidate within its bank, best first.
        per_input = self.k * candidates
        flat_ranking = tf.reshape(ranking, [self.batch, per_input])
        alive = tf.reshape(total > LOG_ZERO / 2, [self.batch, per_input]) & (flat_ranking > -np.inf)
        order = tf.argsort(flat_ranking, axis=1, direction="DESCENDING", stable=True)
        sorted_bank = tf.gather(tf.reshape(bank, [self.batch, per_input]), order, batch_dims=1)
        sorted_alive = tf.gather(alive, order, batch_dims=1)
        in_bank = tf.one_hot(sorted_bank, width + 1, dtype=tf.int32) * tf.cast(sorted_alive, tf.int32)[:, :, None]
        rank_in_bank = tf.reduce_sum(tf.cumsum(in_bank, axis=1) * in_bank, axis=2) - 1
        key = tf.cast(rank_in_bank * (width + 1) + (width - sorted_bank), tf.float32)
        # Dead candidates last, in ranking order (top_k breaks ties to the lower index).
        _, top = tf.math.top_k(tf.where(sorted_alive, -key, -np.inf), k=self.k)
        picked = tf.gather(order, top, batch_dims=1)  # [batch, k], into the input's candidates
        chosen = tf.reshape(picked + tf.range(self.batch)[:, None] * per_input, [-1])
        parent = self.base + tf.reshape(picked // candidates, [-1])
        token = tf.gather(tf.reshape(token, [-1]), chosen)
        met = tf.gather(tf.reshape(new_met, [-1, width]), chosen)
        progress = tf.gather(tf.reshape(new_progress, [-1]), chosen)
        recent = tf.concat([tf.gather(recent, parent), token[:, None]], axis=1)[:, 1:]
        return token, parent, tf.gather(tf.reshape(total, [-1]), chosen), (met, progress, recent)

    def _best_first(self, scores: tf.Tensor, searched: _Searched) -> tf.Tensor:
        """Hypotheses that met every constraint first (the length limit can end others), then by score."""
        by_score = super()._best_first(scores, searched)
        complete = tf.reshape(tf.reduce_sum(tf.cast(searched.extra[0], tf.int32), axis=1) >= self.needed,
                              [self.batch, self.k])
        complete_first = tf.argsort(tf.cast(tf.gather(complete, by_score, batch_dims=1), tf.int32), axis=1,
                                    direction="DESCENDING", stable=True)
        return tf.gather(by_score, complete_first, batch_dims=1)


def constrained_beam_search(step_fn: StepFn, state: Any, context: Any, max_lengths: tf.Tensor, beam_size: int,
                            alpha: float, constraints: Constraints, with_attention: bool = False) -> DecodeResult:
    """:func:`nmt.decoding.beam_search` with ``constraints`` (:class:`_ConstrainedBeam`); a beam of 1
    is one hypothesis placing each constraint where it first can."""
    strategy = _ConstrainedBeam(max_lengths, beam_size, alpha, True, constraints)
    searched = _search_loop(step_fn, tile_batch(state, beam_size), tile_batch(context, beam_size), strategy, None,
                            with_attention)
    return strategy.result(searched)
