"""Vocabulary shortlists: decode over the target pieces a batch's source can plausibly need.

Marian's and Bergamot's lexical shortlist, on SentencePiece pieces: the ``first`` most frequent
target pieces, plus the ``best`` likeliest translations of each source piece, from a lexical table
p(target piece | source piece) estimated on the run's own tokenized training pairs with IBM Model 1
(Brown et al. 1993; EM, a NULL source word, uniform start). Why IBM-1: it is the lexical model
word aligners start from (fast_align's table is IBM-2's, a reparametrised IBM-1), it needs nothing
but the pairs, and EM over pieces is a few passes of gathers and bincounts here (no aligner package
that is maintained and installs beside TensorFlow 2.21 was needed). Dice or raw co-occurrence would
rank frequent pieces first for every source piece; those are in ``first`` anyway, and IBM-1's
explaining-away leaves each source piece its own translations.

A decode batch's allowed targets are the specials, ``first`` and the table rows of every source
piece in the batch, topped up with the next most frequent pieces to a multiple of
:data:`SHORTLIST_BLOCK` (never past the vocabulary): :meth:`Shortlist.allowed_ids`, core TensorFlow
ops only, so an export decodes with the table inside the graph. Ids come back sorted, so the
specials keep their ids (position i holds id i for every i < NUM_SPECIAL: EOS is EOS) and a shortlist of
the whole vocabulary is the vocabulary itself, in order.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import tensorflow as tf

from nmt.constants import DEFAULT_SHORTLIST_BEST, DEFAULT_SHORTLIST_FIRST, EOS_ID, NUM_SPECIAL, SHORTLIST_BLOCK
from nmt.errors import NmtError
from nmt.pipeline import pad_batch
from nmt.run_dir import SHORTLIST_TABLE

if TYPE_CHECKING:
    from nmt.config import Config
    from nmt.tokenizer import Tokenizer

log = logging.getLogger(__name__)

IBM1_ITERATIONS = 5
TABLE_FILE, META_FILE = SHORTLIST_TABLE, "meta.json"


@dataclasses.dataclass(frozen=True)
class Shortlist:
    """``frequency_order`` [target vocab]: target ids, most frequent in training first (specials
    last: they are always allowed); ``table`` [source vocab, best]: each source piece's likeliest
    target pieces (EOS where it has fewer, and for pieces never seen); ``first``: how many of the
    most frequent are always allowed."""

    frequency_order: np.ndarray
    table: np.ndarray
    first: int
    meta: dict = dataclasses.field(default_factory=dict, compare=False)

    @property
    def target_vocab_size(self) -> int:
        return len(self.frequency_order)

    @property
    def best(self) -> int:
        return self.table.shape[1]

    def allowed_ids(self, source: tf.Tensor, lengths: tf.Tensor) -> tf.Tensor:
        """The target ids [n] a batch of source ids [batch, time] (its first ``lengths`` [batch] per
        row) may decode to, ascending: specials, ``first``, every source piece's row of the table,
        then the next most frequent pieces up to a multiple of :data:`SHORTLIST_BLOCK`."""
        vocab = self.target_vocab_size
        order = tf.constant(self.frequency_order, tf.int32)
        pieces = tf.boolean_mask(source, tf.sequence_mask(lengths, tf.shape(source)[1]))
        listed = tf.concat([tf.range(NUM_SPECIAL), order[: self.first],
                            tf.reshape(tf.gather(tf.constant(self.table, tf.int32), pieces), [-1])], axis=0)
        member = tf.scatter_nd(listed[:, None], tf.ones_like(listed), [vocab]) > 0
        count = tf.reduce_sum(tf.cast(member, tf.int32))
        size = tf.minimum((count + SHORTLIST_BLOCK - 1) // SHORTLIST_BLOCK * SHORTLIST_BLOCK, vocab)
        outside = tf.logical_not(tf.gather(member, order))  # in frequency order
        top_up = tf.logical_and(outside, tf.cumsum(tf.cast(outside, tf.int32)) <= size - count)
        member = tf.logical_or(member, tf.scatter_nd(order[:, None], top_up, [vocab]))
        return tf.cast(tf.where(member)[:, 0], tf.int32)

    def allowed_for(self, source_ids: Iterable[Iterable[int]]) -> np.ndarray:
        """:meth:`allowed_ids` of a batch of id lists, eagerly (tests, coverage counts)."""
        padded, lengths = pad_batch([list(r) for r in source_ids])
        return self.allowed_ids(tf.constant(padded), tf.constant(lengths)).numpy()

    def save(self, folder: Path) -> None:
        """``folder/table.npz`` and ``folder/meta.json``, each written whole or not at all."""
        folder.mkdir(parents=True, exist_ok=True)
        partial = folder / f".{TABLE_FILE}.{os.getpid()}.tmp.npz"
        np.savez_compressed(partial, frequency_order=self.frequency_order, table=self.table,
                            first=np.int64(self.first))
        os.replace(partial, folder / TABLE_FILE)
        partial_meta = folder / f".{META_FILE}.{os.getpid()}.tmp"
        partial_meta.write_text(json.dumps({**self.meta, "first": self.first, "best": self.best}, indent=1),
                                encoding="utf-8")
        os.replace(partial_meta, folder / META_FILE)

    @classmethod
    def load(cls, folder: Path, source_vocab_size: int, target_vocab_size: int) -> Shortlist:
        """The shortlist in ``folder``; NmtError naming the remedy when there is none or it was
        built for other vocabularies."""
        path = folder / TABLE_FILE
        remedy = f"build it with nmt shortlist --run {folder.parent}"
        if not path.is_file():
            raise NmtError(f"{folder.parent} has no vocabulary shortlist ({folder.name}/{TABLE_FILE}): {remedy}")
        try:
            with np.load(path) as arrays:
                order, table, first = arrays["frequency_order"], arrays["table"], int(arrays["first"])
        except (OSError, KeyError, ValueError) as error:
            raise NmtError(f"{path}: damaged shortlist ({error}); {remedy}") from None
        if table.shape[0] != source_vocab_size or len(order) != target_vocab_size:
            raise NmtError(f"{path} was built for vocabularies of {table.shape[0]} / {len(order)} pieces, the run has "
                           f"{source_vocab_size} / {target_vocab_size}: {remedy}")
        meta_path = folder / META_FILE
        meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
        return cls(order, table, first, meta)


def ibm1_table(
    pairs: Iterable[tuple[np.ndarray, np.ndarray]],
    source_vocab_size: int,
    target_vocab_size: int,
    iterations: int = IBM1_ITERATIONS,
    progress: Callable[[str], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """IBM Model 1's p(target | source) [source vocab + 1 (NULL, last), target vocab] from
    ``pairs`` of (source ids, target ids) per sentence, and the co-occurrence counts' support
    (True where a source piece and a target piece met in some pair). Dense: 8,000 x 8,000 float32
    is 256 MB. Every pair's source x target grid is laid out at once per EM pass."""
    null = source_vocab_size
    src_rows, tgt_rows = [], []
    for source, target in pairs:
        if len(target) and len(source):
            src_rows.append(np.append(np.asarray(source, np.int64), null))
            tgt_rows.append(np.asarray(target, np.int64))
    if not src_rows:
        raise NmtError("no training pair with both sides non-empty to build a shortlist from")
    src_len = np.array([len(s) for s in src_rows])
    tgt_len = np.array([len(t) for t in tgt_rows])
    src_flat, tgt_flat = np.concatenate(src_rows), np.concatenate(tgt_rows)
    # One cell per (target token, source token of its pair): target token k of pair p meets
    # every source token of p (and NULL).
    per_target = np.repeat(src_len, tgt_len)  # cells of each target token
    cell_target = np.repeat(np.arange(len(tgt_flat)), per_target)
    src_start = np.repeat(np.concatenate([[0], np.cumsum(src_len)[:-1]]), tgt_len)
    ramp = np.arange(len(cell_target)) - np.repeat(np.concatenate([[0], np.cumsum(per_target)[:-1]]), per_target)
    cell = src_flat[np.repeat(src_start, per_target) + ramp] * target_vocab_size + tgt_flat[cell_target]
    del ramp, src_start
    cells = (source_vocab_size + 1) * target_vocab_size
    support = np.bincount(cell, minlength=cells) > 0
    prob = np.full(cells, 1.0 / target_vocab_size, np.float32)
    for iteration in range(iterations):
        weight = prob[cell]
        weight /= np.bincount(cell_target, weights=weight, minlength=len(tgt_flat))[cell_target].astype(np.float32)
        counts = np.bincount(cell, weights=weight, minlength=cells).reshape(source_vocab_size + 1, target_vocab_size)
        totals = counts.sum(axis=1, keepdims=True)
        prob = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0).astype(np.float32).reshape(-1)
        if progress:
            progress(f"IBM-1 pass {iteration + 1}/{iterations}")
    shape = (source_vocab_size + 1, target_vocab_size)
    return prob.reshape(shape), support.reshape(shape)


def build_shortlist(
    pairs: Iterable[tuple[np.ndarray, np.ndarray]],
    source_vocab_size: int,
    target_vocab_size: int,
    first: int = DEFAULT_SHORTLIST_FIRST,
    best: int = DEFAULT_SHORTLIST_BEST,
    iterations: int = IBM1_ITERATIONS,
    progress: Callable[[str], None] | None = None,
) -> Shortlist:
    """The shortlist of tokenized training ``pairs`` (an iterable that is read once)."""
    if first < 0 or best < 1:
        raise NmtError(f"--first must be >= 0 and --best >= 1, got {first} and {best}")
    pairs = list(pairs)
    frequency = np.bincount(np.concatenate([t for _, t in pairs] + [np.zeros(0, np.int64)]).astype(np.int64),
                            minlength=target_vocab_size)[:target_vocab_size]
    frequency[:NUM_SPECIAL] = -1  # the specials come last: they are allowed anyway
    order = np.argsort(-frequency, kind="stable").astype(np.int32)
    prob, support = ibm1_table(pairs, source_vocab_size, target_vocab_size, iterations, progress)
    prob = np.where(support, prob, -1.0)[:source_vocab_size]  # pieces that never met are never listed
    prob[:, :NUM_SPECIAL] = -1.0  # specials are always allowed; a row lists real pieces
    best = min(best, target_vocab_size)
    top = np.argpartition(-prob, best - 1, axis=1)[:, :best]
    top_prob = np.take_along_axis(prob, top, axis=1)
    ranked = np.argsort(-top_prob, axis=1, kind="stable")
    top, top_prob = np.take_along_axis(top, ranked, axis=1), np.take_along_axis(top_prob, ranked, axis=1)
    table = np.where(top_prob > 0, top, EOS_ID).astype(np.int32)
    meta = {"method": f"IBM Model 1, {iterations} EM passes", "pairs": len(pairs)}
    return Shortlist(order, table, min(first, target_vocab_size), meta)


class Coverage(NamedTuple):
    inside: int  # reference pieces inside their batch's shortlist
    total: int  # reference pieces (EOS not counted)
    mean_size: float  # allowed pieces per batch

    @property
    def share(self) -> float:
        return self.inside / self.total if self.total else 1.0


def coverage(shortlist: Shortlist, sources: list[list[int]], references: list[list[int]], batch_size: int) -> Coverage:
    """How much of the references the shortlist lets through, batched as :class:`nmt.translator.Translator`
    batches (longest source first, ``batch_size`` sentences a batch; empty sources skipped)."""
    order = sorted((i for i, s in enumerate(sources) if s), key=lambda i: -len(sources[i]))
    inside = total = 0
    sizes = []
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        allowed = np.zeros(shortlist.target_vocab_size, bool)
        ids = shortlist.allowed_for([sources[i] for i in chunk])
        allowed[ids] = True
        sizes.append(len(ids))
        for i in chunk:
            inside += int(allowed[references[i]].sum())
            total += len(references[i])
    return Coverage(inside, total, float(np.mean(sizes)) if sizes else 0.0)


def dev_coverage(shortlist: Shortlist, config: Config, source: Tokenizer, target: Tokenizer) -> Coverage:
    """:func:`coverage` of the run's dev set, tokenized and cut as decoding cuts it."""
    from nmt.data import read_corpus
    from nmt.text_policy import source_ids

    corpus = read_corpus(config.data.dev, with_target=True)
    encoded, _ = source_ids(source, corpus.sources, config.decode.max_source_length)
    references = target.encode(corpus.targets or [])
    return coverage(shortlist, encoded, references, config.decode.batch_size)
