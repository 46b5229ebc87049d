"""Next whole words for a language model, whatever its units: a small beam over pieces expands
each candidate until its word ends, over any ``step_fn`` with core TensorFlow ops only (see
:mod:`nmt.decoding`). With a typed prefix (the word being typed on a keyboard), the same beam keeps
only pieces whose characters agree with the prefix until it is covered: completions."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
import tensorflow as tf

from nmt.constants import EOS_ID, LOG_ZERO, NUM_SPECIAL, WORD_START
from nmt.decoding import StepFn, tile_batch


class Prefix(NamedTuple):
    """What a search's words must start with: the typed characters as Unicode code points, chars
    [batch, width] (padding past a row's length), and lengths [batch] (0: any word, next words)."""

    chars: tf.Tensor
    lengths: tf.Tensor


class Spellings(NamedTuple):
    """What each piece adds to a word's characters (its text without "▁"; nothing for the reserved
    ids), as code points, end to end: chars [total] (at least one), and each piece's starts [vocab] and
    lengths [vocab] in it. The unit-specific part of completion: words, subwords and characters differ
    only here. Kept flat (not [vocab, longest piece]): a third of the bytes in a phone's file."""

    chars: tf.Tensor
    starts: tf.Tensor
    lengths: tf.Tensor


def spellings_of(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:class:`Spellings` of each id's spelling (:meth:`nmt.tokenizer.Tokenizer.spellings`), as numpy arrays
    (constants in a graph)."""
    lengths = np.array([len(text) for text in texts], np.int32)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int32)
    chars = np.array([ord(c) for text in texts for c in text] or [0], np.int32)
    return chars, starts, lengths


def prefix_agreement(prefix: Prefix, spellings: Spellings) -> tf.Tensor:
    """[batch, width + 1, vocab]: whether piece v can come next in a word of row b whose first c
    characters match the prefix already: its characters agree with the prefix's from c on, as far
    as both go (past the prefix, c >= length, every piece agrees). Integer and boolean ops only (TFLite
    builtins; expand_dims and reshape, not [..., None]: TFLite's builtin strided slice adds no axes)."""
    width = tf.shape(prefix.chars)[1]
    # The characters of a piece that can meet the prefix: as wide as the prefix at most. The table is
    # gathered per call (its width depends on the input, so no converter folds it into a constant).
    span = tf.minimum(tf.reduce_max(spellings.lengths), width)
    at = tf.expand_dims(spellings.starts, 1) + tf.expand_dims(tf.range(span), 0)  # [vocab, span]
    piece_chars = tf.gather(spellings.chars, tf.minimum(at, tf.shape(spellings.chars)[0] - 1))
    offsets = tf.range(width + 1)
    positions = tf.expand_dims(offsets, 1) + tf.expand_dims(tf.range(span), 0)  # [width + 1, span]
    window = tf.gather(prefix.chars, tf.minimum(positions, width - 1), axis=1)  # [batch, width + 1, span]
    remaining = tf.expand_dims(prefix.lengths, 1) - tf.expand_dims(offsets, 0)  # [batch, width + 1]
    # [batch, width + 1, vocab]: how many of a piece's characters are held against the prefix
    compared = tf.minimum(tf.reshape(spellings.lengths, [1, 1, -1]), tf.expand_dims(remaining, 2))
    differs = tf.not_equal(tf.expand_dims(window, 2), tf.expand_dims(tf.expand_dims(piece_chars, 0), 0))
    counted = tf.reshape(tf.range(span), [1, 1, 1, -1]) < tf.expand_dims(compared, 3)
    return tf.logical_not(tf.reduce_any(differs & counted, axis=-1))


class NextWords(NamedTuple):
    """words [batch, k] (strings, "" past the words found), probabilities [batch, k], best first."""

    words: tf.Tensor
    probabilities: tf.Tensor


def _piece_kinds(pieces: tf.Tensor, whole_pieces: bool) -> tuple[tf.Tensor, ...]:
    """[vocab] flags of :func:`next_word_search`'s pieces: special (reserved), bare "▁", first (can
    start a word), inner (can continue one: a letter, digit, mark or apostrophe first), boundary (ends a
    word: whatever cannot continue it)."""
    vocab = tf.shape(pieces)[0]
    special = tf.range(vocab) < NUM_SPECIAL
    bare = tf.equal(pieces, WORD_START)
    first = tf.strings.regex_full_match(pieces, WORD_START + r"[\pL\pN].*") | bare
    # An apostrophe continues a word whether SentencePiece keeps it with the letters after it ('t) or
    # alone (▁don ' t): contractions are words a keyboard must offer.
    inner = tf.strings.regex_full_match(pieces, r"([\pL\pN\pM]|['’]).*") & ~special
    boundary = ~inner & (~special | tf.equal(tf.range(vocab), EOS_ID))
    if whole_pieces:  # a word-level model: every piece but the reserved ones is a whole word
        first = inner = ~special
        boundary = ~special | tf.equal(tf.range(vocab), EOS_ID)
    return special, bare, first, inner, boundary


def word_candidates(
    step_fn: StepFn,
    state: Any,
    context: Any,
    start_ids: tf.Tensor,
    kinds: tuple[tf.Tensor, ...],
    beam_size: int,
    max_pieces: int,
    unroll: bool = False,
    prefix: Prefix | None = None,
    spellings: Spellings | None = None,
) -> tuple[tf.Tensor, tf.Tensor]:
    """The beam over pieces of :func:`next_word_search`, up to its string work: every complete word
    it reaches, as piece ids [batch, beam_size * max_pieces, max_pieces] (0 after the word's end),
    with log P(pieces) + log P(a boundary follows) [batch, beam_size * max_pieces] (LOG_ZERO: none).
    ``kinds`` is :func:`_piece_kinds`'s flags. ``unroll``: the steps as a Python loop rather than a
    ``tf.while_loop`` with TensorArrays (TensorFlow Lite's builtin ops have no TensorArray).

    ``prefix`` (with the vocabulary's ``spellings``): words that start with each row's prefix only.
    A partial word keeps how many of the prefix's characters it has matched; a piece may extend it
    only if its characters agree with the prefix's next ones (:func:`prefix_agreement`), and a word
    may end only once the whole prefix is matched. Past the prefix, any piece that continues a word."""
    _, bare, first, inner, boundary = kinds
    vocab = tf.shape(inner)[0]
    w, m = beam_size, max_pieces
    batch = tf.shape(start_ids)[0]
    base = tf.repeat(tf.range(batch) * w, w)
    if prefix is None:
        prefix = Prefix(tf.zeros([batch, 1], tf.int32), tf.zeros([batch], tf.int32))
        agreement = None  # every piece agrees with an empty prefix: skip the tables
    else:
        agreement = prefix_agreement(prefix, spellings)
    needed = tf.repeat(prefix.lengths, w)  # [batch*w] characters each partial word must match

    def allowed(kind: tf.Tensor, matched: tf.Tensor, rows: tf.Tensor) -> tf.Tensor:
        """[n, vocab]: the pieces of ``kind`` that may extend partial words of batch ``rows`` [n] which
        matched ``matched`` [n] characters."""
        if agreement is None:
            return tf.broadcast_to(kind[None, :], [tf.shape(rows)[0], vocab])
        return kind[None, :] & tf.gather_nd(agreement, tf.stack([rows, matched], axis=1))

    def matched_after(matched: tf.Tensor, token: tf.Tensor, needed: tf.Tensor) -> tf.Tensor:
        return matched if agreement is None else tf.minimum(needed, matched + tf.gather(spellings.lengths, token))

    logits, state, _ = step_fn(tf.cast(start_ids, tf.int32), state, context)
    first_allowed = allowed(first, tf.zeros([batch], tf.int32), tf.range(batch))
    log_probs = tf.where(first_allowed, tf.nn.log_softmax(tf.cast(logits, tf.float32)), LOG_ZERO)
    top_log_probs, top_ids = tf.math.top_k(log_probs, k=w)
    hyp_log_probs, last = tf.reshape(top_log_probs, [-1]), tf.reshape(top_ids, [-1])
    has_body = tf.logical_not(tf.gather(bare, last))
    matched = matched_after(tf.zeros_like(last), last, needed)
    seqs = tf.pad(last[:, None], [[0, 0], [0, m - 1]])  # [batch*w, m] pieces, PAD after the end
    state, context = tile_batch(state, w), tile_batch(context, w)
    rows = tf.repeat(tf.range(batch), w)

    def expand(t: Any, last: tf.Tensor, state: Any, hyp_log_probs: tf.Tensor, has_body: tf.Tensor,
               matched: tf.Tensor, seqs: tf.Tensor) -> tuple[tuple, tuple]:
        """One step: the words that end here (score, pieces), and the beam one piece longer."""
        logits, state, _ = step_fn(last, state, context)
        step_log_probs = tf.nn.log_softmax(tf.cast(logits, tf.float32))
        end = tf.reduce_logsumexp(tf.where(boundary[None, :], step_log_probs, LOG_ZERO), axis=-1)
        complete = has_body & tf.equal(matched, needed)
        ended = (tf.where(complete, hyp_log_probs + end, LOG_ZERO), seqs)
        longer = hyp_log_probs[:, None] + tf.where(allowed(inner, matched, rows), step_log_probs, LOG_ZERO)
        top_log_probs, top = tf.math.top_k(tf.reshape(longer, [batch, w * vocab]), k=w)
        parent = base + tf.reshape(top // vocab, [-1])
        token = tf.reshape(top % vocab, [-1])
        column = tf.one_hot(t + 1, m, dtype=tf.int32)[None, :]  # all zeros once t + 1 == m
        seqs = tf.gather(seqs, parent) * (1 - column) + token[:, None] * column
        state = tf.nest.map_structure(lambda s: tf.gather(s, parent), state)
        matched = matched_after(tf.gather(matched, parent), token, needed)
        return ended, (t + 1, token, state, tf.reshape(top_log_probs, [-1]), tf.ones_like(has_body), matched, seqs)

    carry = (0, last, state, hyp_log_probs, has_body, matched, seqs)
    if unroll:
        ended = []
        for _ in range(m):
            found, carry = expand(*carry)
            ended.append(found)
        ended_log_probs, ended_seqs = (tf.stack(part) for part in zip(*ended))
    else:
        def body(*loop_vars: Any) -> tuple:  # the carry, then the two TensorArrays
            *carry, log_probs_so_far, seqs_so_far = loop_vars
            (log_probs, seqs), carry = expand(*carry)
            return (*carry, log_probs_so_far.write(carry[0] - 1, log_probs), seqs_so_far.write(carry[0] - 1, seqs))

        loop_vars = (tf.constant(0), *carry[1:], tf.TensorArray(tf.float32, size=m), tf.TensorArray(tf.int32, size=m))
        *_, ended_log_probs, ended_seqs = tf.while_loop(lambda t, *_: t < m, body, loop_vars)
        ended_log_probs, ended_seqs = ended_log_probs.stack(), ended_seqs.stack()
    # [m steps, batch*w] -> [batch, w*m] candidates
    return (tf.reshape(tf.transpose(ended_seqs, [1, 0, 2]), [batch, w * m, m]),
            tf.reshape(tf.transpose(ended_log_probs), [batch, w * m]))


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
    prefix: Prefix | None = None,
    spellings: Spellings | None = None,
    known: Callable[[tf.Tensor], tf.Tensor] | None = None,
) -> NextWords:
    """The ``k`` most likely next whole words, whatever the model's units (words, subwords, chars).

    A word is a piece that starts with "▁" (SentencePiece's word start; a bare "▁", as in a
    character model, must be followed by a letter or digit), then pieces that continue it
    (starting with a letter, digit, mark or apostrophe), ended by anything else
    (the next "▁" piece, punctuation, EOS). A small beam of ``beam_size`` partial words is expanded
    up to ``max_pieces`` pieces (:func:`word_candidates`); each complete word scores P(pieces) x
    P(a boundary follows), and a word reached by several segmentations sums them. These events are
    disjoint, so probabilities sum to at most 1. ``pieces`` is the vocabulary's piece strings
    [vocab]; ``k`` <= ``beam_size`` <= vocabulary size. ``whole_pieces`` (a word-level model): every
    piece but the reserved ones is a word, as it stands.

    ``prefix``: completions instead, the words that start with each row's typed prefix (see
    :func:`word_candidates`); a row with a prefix gets P(word | context, the word starts with the
    prefix): its words' probabilities divided by the sum over every candidate found, so that they
    sum to 1 (no word found: none). A row with an empty prefix gets next words, as without one.
    ``known`` (words -> bools, a lexicon's membership): only the words it accepts are candidates
    (before the sums and the renormalisation).

    Runs in the graph with core ops (regex, string joins, ``tf.while_loop``), like every search.
    """
    pieces = tf.convert_to_tensor(pieces, tf.string)
    kinds = _piece_kinds(pieces, whole_pieces)
    candidate_seqs, candidate_log_probs = word_candidates(
        step_fn, state, context, start_ids, kinds, beam_size, 1 if whole_pieces else max_pieces,
        prefix=prefix, spellings=spellings)
    special = kinds[0]
    texts = tf.strings.reduce_join(tf.gather(tf.where(special, "", pieces), candidate_seqs), axis=-1)
    words = tf.strings.regex_replace(texts, "^" + WORD_START, "")
    valid = candidate_log_probs > LOG_ZERO / 2
    if known is not None:
        valid &= known(words)
    probs = tf.where(valid, tf.exp(candidate_log_probs), 0.0)
    if prefix is not None:  # completions: renormalised over what the prefix allows
        found_mass = tf.reduce_sum(probs, axis=-1, keepdims=True)
        completing = (prefix.lengths > 0)[:, None]
        probs = tf.where(completing, probs / tf.where(found_mass > 0, found_mass, 1.0), probs)
    same = tf.equal(words[:, :, None], words[:, None, :]) & valid[:, :, None] & valid[:, None, :]
    total = tf.reduce_sum(tf.where(same, probs[:, None, :], 0.0), axis=-1)
    n = tf.shape(candidate_log_probs)[1]
    earlier = tf.range(n)[None, :] < tf.range(n)[:, None]  # [i, j]: j comes before i
    first_seen = tf.logical_not(tf.reduce_any(same & earlier[None], axis=-1))
    ranking = tf.where(valid & first_seen, total, -1.0)
    top_probs, top = tf.math.top_k(ranking, k=tf.minimum(tf.cast(k, tf.int32), n))
    found = top_probs > 0
    return NextWords(tf.where(found, tf.gather(words, top, batch_dims=1), ""), tf.maximum(top_probs, 0.0))
