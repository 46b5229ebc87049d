"""A language model as TensorFlow Lite files for phones: ``nmt export --format tflite``, and the
reference decoder that turns the model's outputs into next whole words exactly as the SavedModel does.

What converts, and so what the ``.tflite`` file holds (builtin TFLite ops only, no Flex delegate):

* ``ids`` int32[batch, time] and ``lengths`` int32[batch] in (SentencePiece ids of the prompt; a row's
  ids past its length are padding; an empty prompt is one padding id and length 0);
* ``prefix`` int32[batch, width] and ``prefix_lengths`` int32[batch] in: the word being typed, as Unicode
  code points (``suggest``: the prompt is then the text before it); length 0 (and ``[[0]]``) for next words;
* the prefix checked against every piece's spelling (a constant table of code points) with integer and
  boolean ops, so that the search keeps only the pieces that agree with the typed characters;
* the prompt read one token at a time in a ``WHILE`` loop (the training-time reader keeps its per-step
  outputs in TensorArrays, which TFLite's builtin ops cannot hold with an unknown batch);
* the next-word beam search of :func:`nmt.next_word.next_word_search`, its ``max_pieces`` steps unrolled
  (same ops, same order, no TensorArrays);
* out: every candidate word the search completed, ``candidate_ids`` int32[batch, beam*max_pieces,
  max_pieces] (piece ids, 0 after the word's end) and ``candidate_log_probs`` float32[batch, beam*max_pieces]
  (log P(pieces) + log P(a boundary follows); <= -5e8 where there is no candidate).

The last step of the SavedModel's search, which is string work (join a candidate's pieces, drop the
leading "▁", add up the segmentations that spell the same word, divide by their sum when completing,
take the ``k`` best), is
:func:`words_from_candidates` here: a dozen lines that an app ports as they are (``README.md`` of the
export). The whole-word search as it stands does not convert with builtin ops (its TensorArrays have no
static element shape, and its string ops, regex and joins, exist only as Flex ops).

Tokenization: the run's SentencePiece model is copied beside the model (``tokenizer.model``); the app
tokenizes with the SentencePiece library of its platform, the reference decoder with the Python one, by
the rules of :mod:`nmt.text_policy` (surrounding whitespace dropped, a prompt over the run's limit an error;
for ``suggest``, the word being typed cut off at its last boundary: :func:`nmt.text_policy.split_typed_word`).
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nmt.constants import LOG_ZERO, NUM_SPECIAL, WORD_START
from nmt.errors import NmtError, as_nmt_error

VARIANTS = ("float32", "float16", "int8")  # --quantize; "all" writes the three
RECORD = "nmt-tflite.json"
OUTPUTS = ("candidate_ids", "candidate_log_probs")  # candidate_search's, in the frozen graph's order
SIGNATURE = "serving_default"  # the converter's name for the one signature
TOKENIZER = "tokenizer.model"
README = "README.md"


def model_file(variant: str) -> str:
    """``next_words.tflite`` (float32), ``next_words.float16.tflite``, ``next_words.int8.tflite``."""
    return "next_words.tflite" if variant == "float32" else f"next_words.{variant}.tflite"


def variants_for(quantize: str) -> tuple[str, ...]:
    if quantize == "all":
        return VARIANTS
    if quantize not in VARIANTS:
        raise NmtError(f"--quantize must be one of {', '.join(VARIANTS)} or all, got {quantize!r}")
    return (quantize,)


# --- the reference decoder (no TensorFlow) --------------------------------------------------------


def words_from_candidates(candidate_ids: np.ndarray, candidate_log_probs: np.ndarray, pieces: Sequence[str],
                          k: int, completing: Sequence[bool] | None = None,
                          lexicon: frozenset[str] | None = None) -> list[list[tuple[str, float]]]:
    """The model's candidates [batch, n, max_pieces] and log probabilities [batch, n] -> per row the
    ``k`` most likely words with their probabilities, best first (the tail of
    :func:`nmt.next_word.next_word_search`, in float32 like the graph): a candidate's word is its pieces
    joined (reserved ids spell nothing) without the leading "▁"; the probabilities of the candidates
    that spell the same word add up; ties go to the candidate found first. A row that is ``completing``
    a prefix divides each candidate's probability by the sum over the row's candidates first. With a
    ``lexicon`` (suggest, when the export has one), the candidates whose word it lacks are dropped first."""
    results = []
    rows = zip(np.asarray(candidate_ids), np.asarray(candidate_log_probs, np.float32),
               completing if completing is not None else [False] * len(candidate_ids))
    for row_ids, row_log_probs, row_completing in rows:
        totals: dict[str, np.float32] = {}
        first: dict[str, int] = {}
        words = []
        for ids in row_ids:
            text = "".join(pieces[i] for i in ids if i >= NUM_SPECIAL)
            words.append(text[len(WORD_START):] if text.startswith(WORD_START) else text)
        valid = (row_log_probs > LOG_ZERO / 2) & np.array([lexicon is None or w in lexicon for w in words])
        probs = np.where(valid, np.exp(row_log_probs, dtype=np.float32), np.float32(0))
        mass = probs.sum(dtype=np.float32)
        if row_completing and mass > 0:
            probs = probs / mass
        for index, (word, prob) in enumerate(zip(words, probs)):
            if not valid[index]:
                continue
            totals[word] = np.float32(totals.get(word, np.float32(0)) + prob)
            first.setdefault(word, index)
        ranked = sorted(totals, key=lambda word: (-totals[word], first[word]))
        results.append([(word, float(totals[word])) for word in ranked[:k] if totals[word] > 0])
    return results


@dataclass(frozen=True)
class TfliteRecord:
    """``nmt-tflite.json``: what the app (and :class:`TfliteNextWords`) needs beside the model."""

    beam_size: int
    max_pieces: int
    max_k: int
    max_prompt_tokens: int
    start_id: int
    running_text: bool
    variants: dict[str, str]  # variant -> file
    ops: list[str]  # the TFLite builtin ops the runtime must have
    pieces: list[str]  # id -> SentencePiece piece
    lexicon: list[str] | None = None  # the words suggest may offer (nmt lexicon); None: any

    def to_json(self) -> str:
        inputs = {"ids": "int32[batch, time]", "lengths": "int32[batch]", "prefix": "int32[batch, width]",
                  "prefix_lengths": "int32[batch]"}
        outputs = {"candidate_ids": "int32[batch, beam_size*max_pieces, max_pieces]",
                   "candidate_log_probs": "float32[batch, beam_size*max_pieces]"}
        data = {"format": "nmt-tflite-next-words/2", "signature": SIGNATURE, "inputs": inputs,
                "outputs": outputs, **self.__dict__}
        return json.dumps(data, ensure_ascii=False, indent=1)

    @classmethod
    def read(cls, folder: Path) -> TfliteRecord:
        data = json.loads((folder / RECORD).read_text(encoding="utf-8"))
        return cls(**{name: data[name] for name in cls.__dataclass_fields__ if name in data})


class TfliteNextWords:
    """An export of ``nmt export --format tflite`` run by ``tf.lite.Interpreter``: next whole words
    and a keyboard's suggestions as :meth:`nmt.language_model.LanguageModelPredictor.next_words` and
    ``.suggest`` give them (one text in, one answer out; a list in, a list out).

    >>> lm = TfliteNextWords("exports/lm-en-tflite")                          # doctest: +SKIP
    >>> lm.next_words("She went to the", k=3)                                 # doctest: +SKIP
    [('hospital', 0.13), ('station', 0.114), ('party', 0.038)]
    >>> lm.suggest("I love piz")                                              # doctest: +SKIP
    Suggestions(completing='piz', words=[('pizza', 0.97), ...])
    """

    def __init__(self, folder: str | Path, variant: str = "float32", num_threads: int | None = None) -> None:
        import tensorflow as tf

        from nmt.tokenizer import Tokenizer

        self.folder = Path(folder)
        self.record = TfliteRecord.read(self.folder)
        if variant not in self.record.variants:
            raise NmtError(f"{self.folder} has no {variant} model (it has {', '.join(self.record.variants)})")
        self.tokenizer = Tokenizer.load(self.folder / TOKENIZER)
        with warnings.catch_warnings():  # tf.lite.Interpreter's deprecation notice (LiteRT runs the same files)
            warnings.simplefilter("ignore", UserWarning)
            self.interpreter = tf.lite.Interpreter(model_path=str(self.folder / self.record.variants[variant]),
                                                   num_threads=num_threads)
        self.runner = self.interpreter.get_signature_runner(SIGNATURE)
        self.lexicon = frozenset(self.record.lexicon) if self.record.lexicon is not None else None

    def candidates(self, ids: np.ndarray, lengths: np.ndarray, prefix: np.ndarray | None = None,
                   prefix_lengths: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One call of the model; no ``prefix``: next words (an empty prefix)."""
        if prefix is None:
            prefix, prefix_lengths = np.zeros([len(lengths), 1], np.int32), np.zeros([len(lengths)], np.int32)
        out = self.runner(ids=np.asarray(ids, np.int32), lengths=np.asarray(lengths, np.int32),
                          prefix=np.asarray(prefix, np.int32), prefix_lengths=np.asarray(prefix_lengths, np.int32))
        return out["candidate_ids"], out["candidate_log_probs"]

    def _words(self, texts: Sequence[str], prefixes: Sequence[str], k: int,
               lexicon: frozenset[str] | None = None) -> list[list[tuple[str, float]]]:
        from nmt.signatures import check_k
        from nmt.text_policy import prefix_chars, prompt_ids

        with as_nmt_error():
            check_k(k, self.record.max_k)
        results = []
        chars, _ = prefix_chars(prefixes)
        for ids, typed in zip(prompt_ids(self.tokenizer, texts, self.record.max_prompt_tokens), chars):
            row = np.array([ids or [0]], np.int32)  # one padding id for an empty prompt (and prefix)
            found = self.candidates(row, np.array([len(ids)], np.int32), np.array([typed or [0]], np.int32),
                                    np.array([len(typed)], np.int32))
            results += words_from_candidates(*found, self.record.pieces, k, completing=[bool(typed)], lexicon=lexicon)
        return results

    def next_words(self, texts: str | Sequence[str], k: int = 5) -> Any:
        if isinstance(texts, str):
            return self.next_words([texts], k)[0]
        return self._words(texts, [""] * len(texts), k)

    def suggest(self, texts: str | Sequence[str], k: int = 3) -> Any:
        from nmt.language_model import Suggestions
        from nmt.text_policy import split_typed_word

        if isinstance(texts, str):
            return self.suggest([texts], k)[0]
        contexts, prefixes = zip(*(split_typed_word(text) for text in texts)) if texts else ((), ())
        found = self._words(contexts, prefixes, k, self.lexicon)
        return [Suggestions(prefix, words) for prefix, words in zip(prefixes, found)]


# --- the graph --------------------------------------------------------------------------------------


def piece_kinds(lm: Any) -> tuple[np.ndarray, ...]:
    """:func:`nmt.next_word._piece_kinds` of the run's vocabulary, computed once (eagerly): constants
    in the TFLite graph, where its regex ops do not exist."""
    from nmt.next_word import _piece_kinds

    return tuple(kind.numpy() for kind in _piece_kinds(lm.pieces, lm.config.tokenizer.model_type == "word"))


def candidate_search(lm: Any, ids: Any, lengths: Any, prefix: Any, prefix_lengths: Any, beam_size: int,
                     kinds: tuple[np.ndarray, ...]) -> dict[str, Any]:
    """:func:`nmt.next_word.word_candidates` after the prompt, in ops that TFLite has as builtins:
    the prompt read in a ``tf.while_loop`` of ``step``s carrying the state only (the sequence-level
    reader of :meth:`LanguageModelPredictor.prime` keeps TensorArrays), the search's steps unrolled,
    the typed prefix (empty: next words) held against the pieces' spellings as constants."""
    import tensorflow as tf

    from nmt.next_word import Prefix, Spellings, word_candidates

    model = lm.model
    whole_pieces = lm.config.tokenizer.model_type == "word"
    batch = tf.shape(ids)[0]

    # The prompt: state before its last token, and that token (as LanguageModelPredictor.prime).
    sequence = tf.concat([tf.fill([batch, 1], lm.start_id), ids], axis=1)
    last = tf.gather(sequence, lengths, batch_dims=1)

    def read(t, state):
        _, new_state, _ = model.step(tf.gather(sequence, t, axis=1), state, {})
        keep = (t < lengths)[:, None]
        return t + 1, tf.nest.map_structure(lambda n, p: tf.where(keep, n, p), new_state, state)

    _, state = tf.while_loop(lambda t, _: t < tf.shape(ids)[1], read, (tf.constant(0), model.initial_state(batch)))

    # The search itself, with its steps unrolled: TFLite's builtin ops have no TensorArray.
    constants = tuple(tf.constant(kind) for kind in kinds)
    spellings = Spellings(*(tf.constant(part.numpy()) for part in lm.spellings))
    candidate_ids, candidate_log_probs = word_candidates(
        model.step, state, {}, last, constants, beam_size, 1 if whole_pieces else lm.max_word_pieces, unroll=True,
        prefix=Prefix(prefix, prefix_lengths), spellings=spellings)
    return {"candidate_ids": candidate_ids, "candidate_log_probs": candidate_log_probs}


def builtin_ops(model: bytes) -> list[str]:
    """The operators a ``.tflite`` file uses, by name (custom ones as ``custom:NAME``)."""
    from tensorflow.lite.python import schema_py_generated as schema

    names = {value: name for name, value in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    flat = schema.Model.GetRootAsModel(model, 0)
    ops = set()
    for i in range(flat.OperatorCodesLength()):
        code = flat.OperatorCodes(i)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        custom = code.CustomCode()
        ops.add(f"custom:{custom.decode()}" if custom else names.get(builtin, str(builtin)))
    return sorted(ops)


def convert(lm: Any, variant: str, beam_size: int) -> bytes:
    """The model as TFLite flatbuffer bytes, builtin ops only (NmtError naming the cause otherwise)."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    from nmt.language_model import PREFIX_SPEC
    from nmt.layers.recurrent import forced_recurrence_path

    spec = [tf.TensorSpec([None, None], tf.int32, name="ids"), tf.TensorSpec([None], tf.int32, name="lengths"),
            *PREFIX_SPEC]
    kinds = piece_kinds(lm)
    function = tf.function(
        lambda ids, lengths, prefix, prefix_lengths: candidate_search(lm, ids, lengths, prefix, prefix_lengths,
                                                                      beam_size, kinds),
        autograph=False, input_signature=spec)
    # Weights as constants (not resource variables): what quantization works on, and the smaller runtime.
    # Traced on the recurrence's loop path: TFLite has no cuDNN ops.
    with forced_recurrence_path("loop"):
        frozen = convert_variables_to_constants_v2(function.get_concrete_function())
    # Freezing loses the output names; a wrapper gives them back (the signature's output tensor names).
    named = tf.function(lambda ids, lengths, prefix, prefix_lengths: dict(zip(OUTPUTS, frozen(
        ids, lengths, prefix, prefix_lengths))), autograph=False, input_signature=spec)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([named.get_concrete_function()], tf.Module())
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if variant == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif variant == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]  # dynamic range: int8 weights, float activations
        # One scale per weight matrix, not per output channel: a tied embedding's two uses (the lookup and
        # the softmax) then quantize alike and share one int8 copy (keyboard-en: 3.1 -> 2.2 MB).
        converter._experimental_disable_per_channel = True
    try:
        return converter.convert()
    except Exception as error:  # the converter raises its own ConverterError with MLIR's diagnostics
        reason = next((line.strip() for line in str(error).splitlines() if "error:" in line), str(error)[:300])
        raise NmtError(f"this model does not convert to TFLite builtin ops ({variant}): {reason}") from None


def export_tflite(run_dir: str | Path, out_dir: str | Path, quantize: str = "float32",
                  weights: str = "best", max_k: int | None = None) -> Path:
    """Writes ``out_dir/``: the ``.tflite`` variant(s), ``tokenizer.model``, ``nmt-tflite.json`` and a
    ``README.md`` for the app. ``max_k``: the most words a call may ask for (default
    ``signatures.MAX_EXPORTED_K``; the beam is :meth:`LanguageModelPredictor.beam_size_for` it). Every file
    is written under a temporary name and renamed when whole; the record, which names the model files,
    comes last."""
    import tensorflow as tf

    from nmt import signatures as sig
    from nmt.inference import load
    from nmt.io import atomic_write_bytes, atomic_write_text, is_disk_full

    variants = variants_for(quantize)
    predictor = load(run_dir, weights)
    with as_nmt_error():
        sig.check_export_format(predictor.task, sig.TFLITE, str(run_dir))
    lm = predictor
    max_k = min(max_k or sig.MAX_EXPORTED_K, lm.max_k)
    beam_size = lm.beam_size_for(max_k)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise NmtError(f"--out {out_dir} is a file; give a folder")
    written: dict[str, str] = {}
    ops: set[str] = set()
    try:
        for variant in variants:
            model = convert(lm, variant, beam_size)
            ops.update(builtin_ops(model))
            atomic_write_bytes(out_dir / model_file(variant), model)
            written[variant] = model_file(variant)
        atomic_write_bytes(out_dir / TOKENIZER, lm.tokenizer.model_proto)
        record = TfliteRecord(beam_size, 1 if lm.config.tokenizer.model_type == "word" else lm.max_word_pieces,
                              max_k, lm.max_prompt_tokens, lm.start_id, lm.running_text, written, sorted(ops),
                              [lm.tokenizer.id_to_piece(i) for i in range(lm.tokenizer.vocab_size)],
                              lm.lexicon.words if lm.lexicon is not None else None)
        atomic_write_text(out_dir / README, readme(record))
        atomic_write_text(out_dir / RECORD, record.to_json())
    except (tf.errors.ResourceExhaustedError, OSError) as error:
        if not is_disk_full(error):
            raise
        raise NmtError(f"no space left on device while writing {out_dir}; free some space and export again") from None
    return out_dir


def readme(record: TfliteRecord) -> str:
    files = ", ".join(f"`{name}` ({variant})" for variant, name in record.variants.items())
    m, n = record.max_pieces, record.beam_size * record.max_pieces
    return f"""# Next words, TensorFlow Lite

Written by `nmt export --format tflite` on {time.strftime("%Y-%m-%d")}. Files: {files}, `{TOKENIZER}`
(SentencePiece), `{RECORD}` (what this file says, as data, with the vocabulary's pieces).

Runtime: the TensorFlow Lite (LiteRT) runtime with its builtin ops only, no Flex delegate, no custom op:
{", ".join(record.ops)}.

Signature `{SIGNATURE}` (the model's only one; it is the next-word search over prompt ids):

| tensor | dtype | shape |
| --- | --- | --- |
| in `ids` | int32 | [batch, time]: the prompt's SentencePiece ids (no BOS/EOS), padding past a row's length; \
`[[0]]` for an empty prompt |
| in `lengths` | int32 | [batch]: ids per row (0 for an empty prompt; at most {record.max_prompt_tokens}) |
| in `prefix` | int32 | [batch, width]: the word being typed, as Unicode code points (padding past \
a row's length); `[[0]]` for next words |
| in `prefix_lengths` | int32 | [batch]: code points per row (0: next words, no word being typed) |
| out `candidate_ids` | int32 | [batch, {n}, {m}]: candidate words as piece ids, 0 after the word |
| out `candidate_log_probs` | float32 | [batch, {n}]: log probability of each candidate; <= -5e8: none |

Next words: tokenize the prompt with `{TOKENIZER}` after trimming surrounding whitespace; prefix `[[0]]`,
length 0. A keyboard's suggestions (complete the word being typed): if the text ends inside a word (a
letter, digit or mark, or an apostrophe within the word), the word from its first letter or digit is the
prefix (its code points in `prefix`) and the text before it the prompt; otherwise the prefix is empty.

Words from the outputs (k <= {record.max_k}): for each candidate with log probability > -5e8, join its
pieces (ids < 4 spell nothing), drop one leading "▁"; for suggestions, drop the words outside `lexicon`
(in `{RECORD}`, when the run has one); when completing a prefix, divide each candidate's
exp(log probability) by their sum over the row; add the probabilities of candidates that spell the same
word; sort by that sum (ties: the candidate found first) and keep the first k.
`nmt.tflite.words_from_candidates` is the reference (and `nmt.text_policy.split_typed_word` for the prefix).
"""
