"""Terminology for translation: phrases the output must contain (``constraints``) and phrases it must
not (``avoid``), from text to the tensors of :class:`nmt.decoding.Constraints`.

The text -> pieces rule, in its Python form (:class:`TerminologyEncoder`, for ``nmt.load``) beside its
in-graph form (:class:`InGraphTerminology`, for the exported ``translate_constrained`` signature);
``tests/test_constraints.py`` checks they agree:

- A phrase is segmented with the run's target SentencePiece model as it is written inside a
  sentence: after a space (a word of its own) in spaced languages, with no word-start marker in the
  languages of :data:`nmt.constants.UNSPACED_LANGUAGES` (Japanese is written without spaces).
- An avoided phrase is banned as that piece sequence, and every single piece whose text holds the
  phrase is banned outright ("駅" bans 駅, 駅前, ▁駅...). Another segmentation of the same characters
  (rare: the search follows the model, which writes text as the tokenizer segments it) is not
  blocked; :meth:`nmt.translator.Translator.translate` checks the text and warns.
- A constraint that holds an avoided phrase, a phrase with characters the target vocabulary lacks,
  and constraints longer than the output may be are errors (in the graph: InvalidArgumentError).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from nmt import signatures as sig
from nmt.constants import NUM_SPECIAL, UNK_ID, UNSPACED_LANGUAGES, WORD_START
from nmt.constrained_beam import Constraints
from nmt.errors import NmtError
from nmt.tokenizer import Tokenizer

# What a terminology line (nmt translate --json-input, /v1/translate) may hold besides its text:
# the keys are the translate_constrained signature's input names.
CONSTRAINTS, AVOID = sig.CONSTRAINTS, sig.AVOID
HOLDS_AVOIDED = ("constraint {constraint!r} holds the avoided phrase {avoided!r}: no output can have one without "
                 "the other")
UNKNOWN_CHARACTERS = "has characters the target vocabulary lacks"
TOO_LONG = ("the constraints take {pieces} pieces but this input's output may have at most {limit} "
            "(decode.max_length_ratio x its pieces + decode.max_length_offset, with the end of sentence)")


@dataclasses.dataclass(frozen=True)
class Terminology:
    """One input's phrases that its translation must contain, and must not."""

    constraints: tuple[str, ...] = ()
    avoid: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.constraints or self.avoid)

    @classmethod
    def of(cls, constraints: Sequence[str] = (), avoid: Sequence[str] = ()) -> Terminology:
        """Checked: every phrase a non-empty string, no constraint holding an avoided phrase
        (ValueError naming them)."""
        for name, phrases in ((CONSTRAINTS, constraints), (AVOID, avoid)):
            if isinstance(phrases, str) or not all(isinstance(p, str) for p in phrases):
                raise ValueError(f"{name!r} must be a list of strings")
            if any(not p.strip() for p in phrases):
                raise ValueError(f"{name!r} holds an empty phrase")
        for constraint in constraints:
            for avoided in avoid:
                if avoided.strip() in constraint:
                    raise ValueError(HOLDS_AVOIDED.format(constraint=constraint, avoided=avoided))
        return cls(tuple(p.strip() for p in constraints), tuple(p.strip() for p in avoid))


def phrase_model_proto(model_proto: bytes, language: str | None) -> bytes:
    """The target SentencePiece model that segments a phrase as it is written inside a sentence."""
    if language not in UNSPACED_LANGUAGES:
        return model_proto  # a word after a space: the word-start marker SentencePiece adds is right
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto.FromString(model_proto)
    proto.normalizer_spec.add_dummy_prefix = False
    return proto.SerializeToString()


def piece_texts(tokenizer: Tokenizer) -> list[str]:
    """Each id's text as it appears in the output (reserved ids: none)."""
    return ["" if i < NUM_SPECIAL else tokenizer.id_to_piece(i).replace(WORD_START, " ")
            for i in range(tokenizer.vocab_size)]


def _padded(rows: list[list[list[int]]], fill: int) -> np.ndarray:
    """[batch, (phrases), (pieces)] -> [batch, phrases, pieces], each at least 1 wide."""
    phrases = max([len(r) for r in rows] + [1])
    pieces = max([len(p) for r in rows for p in r] + [1])
    out = np.full([len(rows), phrases, pieces], fill, np.int32)
    for b, row in enumerate(rows):
        for a, phrase in enumerate(row):
            out[b, a, : len(phrase)] = phrase
    return out


class TerminologyEncoder:
    """Python form: terminology -> :class:`nmt.decoding.Constraints` arrays for one batch."""

    def __init__(self, target_tokenizer: Tokenizer, language: str | None) -> None:
        self.tokenizer = Tokenizer(phrase_model_proto(target_tokenizer.model_proto, language))
        self.texts = piece_texts(target_tokenizer)

    def pieces(self, phrases: Sequence[str]) -> list[list[int]]:
        return self.tokenizer.encode(list(phrases)) if phrases else []

    def holding(self, phrase: str) -> list[int]:
        """The ids whose text holds ``phrase``."""
        return [i for i, text in enumerate(self.texts) if phrase in text]

    def encode(self, items: Sequence[Terminology], max_lengths: Sequence[int],
               lines: Sequence[int] | None = None) -> Constraints:
        """One batch's terminology; ``max_lengths``: each input's output limit (with EOS);
        ``lines``: the inputs' line numbers for errors (default 1, 2, ...)."""
        lines = list(lines) if lines is not None else list(range(1, len(items) + 1))
        tokens, phrases, avoid, lengths = [], [], [], []
        banned = np.zeros([len(items), len(self.texts)], bool)
        for b, item in enumerate(items):
            required = self.pieces(item.constraints)
            avoided = self.pieces(item.avoid)
            for phrase, ids in zip(item.constraints, required):
                if UNK_ID in ids:
                    raise NmtError(f"line {lines[b]}: {phrase!r} {UNKNOWN_CHARACTERS}")
            for phrase in item.avoid:
                banned[b, self.holding(phrase)] = True
            for constraint, ids in zip(item.constraints, required):
                hit = [i for i in ids if banned[b, i]]
                if hit:
                    raise NmtError(f"line {lines[b]}: " + HOLDS_AVOIDED.format(
                        constraint=constraint, avoided=next(a for a in item.avoid if a in self.texts[hit[0]])))
            flat = [i for ids in required for i in ids]
            if len(flat) + 1 > max_lengths[b]:
                raise NmtError(f"line {lines[b]}: " + TOO_LONG.format(pieces=len(flat), limit=max_lengths[b]))
            tokens.append(flat)
            phrases.append([n for n, ids in enumerate(required) for _ in ids])
            avoid.append(avoided)
            # An avoided phrase the vocabulary cannot write never appears: nothing to ban (length 0).
            lengths.append([0 if UNK_ID in ids else len(ids) for ids in avoided])
        width = max([len(t) for t in tokens] + [1])
        token_array = np.zeros([len(items), width], np.int32)
        phrase_array = np.full([len(items), width], -1, np.int32)
        for b, (t, p) in enumerate(zip(tokens, phrases)):
            token_array[b, : len(t)], phrase_array[b, : len(p)] = t, p
        avoid_array = _padded(avoid, 0)
        length_array = np.zeros(avoid_array.shape[:2], np.int32)
        for b, row in enumerate(lengths):
            length_array[b, : len(row)] = row
        return Constraints(token_array, phrase_array, avoid_array, length_array, banned)


def unmet(item: Terminology, text: str) -> list[str]:
    """What the output ``text`` breaks: each constraint it lacks and each avoided phrase it holds."""
    return ([f"lacks {c!r}" for c in item.constraints if c not in text]
            + [f"holds {a!r}" for a in item.avoid if a in text])


def _one_column_at_least(t: tf.Tensor, fill: int) -> tf.Tensor:
    return tf.pad(t, [[0, 0], [0, tf.maximum(1 - tf.shape(t)[1], 0)]], constant_values=fill)


class InGraphTerminology(tf.Module):
    """In-graph form: phrases as strings [batch, phrases] ("" = none) -> :class:`Constraints`, with
    the checks as InvalidArgumentError (a 400 from TF Serving and ``nmt serve``)."""

    def __init__(self, target_tokenizer: Tokenizer, language: str | None) -> None:
        super().__init__(name="terminology")
        from nmt.text_policy import InGraphTokenizer

        self.tokenizer = InGraphTokenizer(phrase_model_proto(target_tokenizer.model_proto, language),
                                          "phrase_tokenizer")
        self.texts = tf.constant(piece_texts(target_tokenizer))

    def _pieces(self, phrases: tf.Tensor) -> tf.RaggedTensor:
        """[batch, n] strings -> [batch, (phrases), (pieces)]: the empty strings left out."""
        present = tf.strings.length(tf.strings.strip(phrases)) > 0
        kept = tf.ragged.boolean_mask(tf.strings.strip(phrases), present)
        return kept.with_flat_values(self.tokenizer.tokenize(kept.flat_values))

    def _holding(self, phrases: tf.Tensor) -> tf.Tensor:
        """[batch, n] strings -> [batch, vocab]: the ids whose text holds one of the row's phrases."""
        flat = tf.strings.strip(tf.reshape(phrases, [-1]))
        escaped = tf.strings.regex_replace(flat, r"([\\.^$|?*+()\[\]{}])", r"\\\1")

        def holds(pattern: tf.Tensor) -> tf.Tensor:
            return tf.strings.regex_full_match(self.texts, tf.strings.join(["(?s).*", pattern, ".*"]))

        matches = tf.map_fn(holds, escaped, fn_output_signature=tf.TensorSpec([None], tf.bool))
        matches &= (tf.strings.length(flat) > 0)[:, None]
        return tf.reduce_any(tf.reshape(matches, [tf.shape(phrases)[0], tf.shape(phrases)[1], -1]), axis=1)

    def encode(self, constraints: tf.Tensor, avoid: tf.Tensor, max_lengths: tf.Tensor) -> Constraints:
        required = self._pieces(constraints)  # [batch, (phrases), (pieces)]
        known = tf.debugging.Assert(tf.logical_not(tf.reduce_any(tf.equal(required.flat_values, UNK_ID))),
                                    [f"a constraint {UNKNOWN_CHARACTERS}"])
        with tf.control_dependencies([known]):
            tokens = required.merge_dims(1, 2)
        phrase_of = tf.ragged.range(required.row_lengths(axis=1))  # [batch, (phrases)]: 0, 1, ...
        phrase_of = tf.repeat(phrase_of.flat_values, required.values.row_lengths())
        phrases = tokens.with_flat_values(tf.cast(phrase_of, tf.int32))
        token_array = _one_column_at_least(tokens.to_tensor(0), 0)
        phrase_array = _one_column_at_least(phrases.to_tensor(-1), -1)
        avoided = self._pieces(avoid)
        avoid_array = avoided.to_tensor(0)
        avoid_array = tf.pad(avoid_array, [[0, 0], [0, tf.maximum(1 - tf.shape(avoid_array)[1], 0)],
                                           [0, tf.maximum(1 - tf.shape(avoid_array)[2], 0)]])
        # An avoided phrase the vocabulary cannot write never appears: nothing to ban (length 0).
        writable = tf.logical_not(tf.reduce_any(tf.equal(avoided, UNK_ID), axis=2)).flat_values
        lengths = avoided.row_lengths(axis=2)
        avoid_lengths = tf.cast(lengths.with_flat_values(tf.where(writable, lengths.flat_values, 0)).to_tensor(0),
                                tf.int32)
        avoid_lengths = tf.pad(avoid_lengths, [[0, 0], [0, tf.shape(avoid_array)[1] - tf.shape(avoid_lengths)[1]]])
        banned = self._holding(avoid)
        needed = tf.cast(tokens.row_lengths(), tf.int32)
        held = tf.reduce_any(tf.gather(banned, token_array, batch_dims=1) & (phrase_array >= 0))
        checks = [tf.debugging.Assert(tf.logical_not(held), ["a constraint holds an avoided phrase"]),
                  tf.debugging.Assert(tf.reduce_all(needed + 1 <= max_lengths),
                                      ["the constraints take more pieces than the output may have; pieces:", needed,
                                       "limits (with the end of sentence):", max_lengths], summarize=8)]
        with tf.control_dependencies(checks):
            return Constraints(tf.identity(token_array), phrase_array, avoid_array, avoid_lengths, banned)


def terminology_from_json(where: str, value: Any) -> tuple[str, Terminology]:
    """A --json-input line's object -> its text and terminology (NmtError naming ``where``, the file
    and line, and the key)."""
    if not isinstance(value, dict) or not isinstance(value.get("text"), str):
        raise NmtError(f"{where}: expected a JSON object with a \"text\" string, such as "
                       '{"text": "...", "constraints": ["..."], "avoid": ["..."]}')
    unknown = sorted(set(value) - {"text", CONSTRAINTS, AVOID})
    if unknown:
        raise NmtError(f"{where}: unknown key {unknown[0]!r} (expected text, {CONSTRAINTS}, {AVOID})")
    try:
        return value["text"], Terminology.of(value.get(CONSTRAINTS, []), value.get(AVOID, []))
    except ValueError as error:
        raise NmtError(f"{where}: {error}") from None
