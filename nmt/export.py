"""SavedModel export: signatures that take and return strings, SentencePiece inside the graph.

The exported graph holds the model's variables, the SentencePiece models (tensorflow-text's
``SentencepieceTokenizer``, whose ops stock TensorFlow Serving links) and the decoding loops of
:mod:`nmt.decoding` (core ops only), so ``tensorflow_model_server`` serves it as it is.

Translation signatures:
    ``translate`` (also ``serving_default``): text string[batch] -> translations string[batch],
    scores float[batch], beam search with the run's ``decode.beam_size``; ``translate_greedy``: the
    same with greedy search; ``translate_ids``: ids int32[batch, time], lengths int32[batch] ->
    ids, lengths, scores (beam search), for clients that tokenize themselves;
    ``translate_attention``: ``translate`` plus the best hypothesis' attention weights
    float[batch, target, source] and its pieces (source_tokens, target_tokens with their lengths);
    ``inspect``: text -> the source pieces (tokens, lengths) and the encoder's output after each,
    states float[batch, time, units].
Language-model signatures:
    ``next_words``: text string[batch], k int32[batch] -> words string[batch, k], probabilities
    float[batch, k] (k is the largest requested; rows that asked for fewer get "" and 0 past their
    k); ``serving_default``: text -> the 5 most likely next words (so that a bare
    ``{"instances": ["I love eating"]}`` works); ``generate``: text string[batch], max_tokens, temperature,
    top_k, top_p, seed (one per row) -> text string[batch] (prompt + continuation);
    ``next_words_ids``: ids, lengths, k -> the same as ``next_words``; ``inspect``: text -> the
    pieces read (tokens, lengths, the start symbol first), the top layer's hidden state after each
    (states float[batch, time, units]) and the 5 likeliest next pieces (top_tokens,
    top_probabilities).

Every input has a batch dimension, so TF Serving's REST "instances" format works for all of them.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from nmt import decoding
from nmt.errors import NmtError
from nmt.inference import LanguageModelRunner, Translator, load
from nmt.io import is_disk_full
from nmt.tokenizer import EOS_ID

TEXT = tf.TensorSpec([None], tf.string, name="text")
IDS = tf.TensorSpec([None, None], tf.int32, name="ids")
LENGTHS = tf.TensorSpec([None], tf.int32, name="lengths")
PER_ROW_INT = tf.TensorSpec([None], tf.int32)
PER_ROW_FLOAT = tf.TensorSpec([None], tf.float32)


class InGraphTokenizer(tf.Module):
    """A run's SentencePiece model as a TensorFlow resource (tracked, saved with the model)."""

    def __init__(self, model_proto: bytes, name: str) -> None:
        super().__init__(name=name)
        import tensorflow_text  # registers the SentencePiece ops

        # A distinct name per tokenizer: TF Text names the model resource after it, and a restored
        # SavedModel whose two tokenizers share a name gets the first model for both.
        self.sentencepiece = tensorflow_text.SentencepieceTokenizer(model=model_proto, out_type=tf.int32, name=name)

    def encode(self, text: tf.Tensor, max_length: int) -> tuple[tf.Tensor, tf.Tensor]:
        """string[batch] -> zero-padded ids [batch, time] (cut to ``max_length``) and lengths."""
        ragged = self.sentencepiece.tokenize(text)[:, :max_length]
        return _at_least_one_column(ragged.to_tensor(0)), tf.cast(ragged.row_lengths(), tf.int32)

    def decode(self, ids: tf.Tensor, lengths: tf.Tensor) -> tf.Tensor:
        """ids [batch, time], lengths [batch] (tokens to keep) -> string[batch]."""
        return self.sentencepiece.detokenize(tf.RaggedTensor.from_tensor(ids, lengths=lengths))


def _at_least_one_column(ids: tf.Tensor) -> tf.Tensor:
    """A batch of only empty texts tokenizes to [batch, 0], which the encoder cannot read: one pad
    column makes it [batch, 1], as the same texts are when batched with a longer one."""
    return tf.pad(ids, [[0, 0], [0, tf.maximum(1 - tf.shape(ids)[1], 0)]])


def checked_ids(ids: tf.Tensor, lengths: tf.Tensor, vocab_size: int, max_length: int) -> tuple[tf.Tensor, tf.Tensor]:
    """The ``*_ids`` signatures' inputs made safe: cut to ``max_length``, lengths clipped to [0, width],
    padding (past a row's length) zeroed, and an id outside [0, vocab_size) within a row's length
    is an InvalidArgumentError (TF Serving and ``nmt serve`` answer 400) rather than an embedding
    lookup that fails on CPU and reads zeros or garbage on an accelerator."""
    ids = _at_least_one_column(ids[:, :max_length])
    lengths = tf.clip_by_value(lengths, 0, tf.shape(ids)[1])
    inside = tf.range(tf.shape(ids)[1])[None, :] < lengths[:, None]
    bad = inside & ((ids < 0) | (ids >= vocab_size))
    check = tf.debugging.Assert(
        tf.logical_not(tf.reduce_any(bad)),
        [f"ids must be in [0, {vocab_size}) (the vocabulary); out of range:", tf.boolean_mask(ids, bad)], summarize=5)
    with tf.control_dependencies([check]):
        return tf.where(inside, ids, 0), tf.identity(lengths)


def _text_lengths(lengths: tf.Tensor, ids: tf.Tensor) -> tf.Tensor:
    """Token counts without a final EOS."""
    last = tf.gather(ids, tf.maximum(lengths - 1, 0), batch_dims=1)
    return lengths - tf.cast((lengths > 0) & tf.equal(last, EOS_ID), tf.int32)


def translation_archive(translator: Translator) -> keras.export.ExportArchive:
    model, cfg = translator.model, translator.config.decode
    source = InGraphTokenizer(translator.source_tokenizer.model_proto, "source_tokenizer")
    target = InGraphTokenizer(translator.target_tokenizer.model_proto, "target_tokenizer")

    def search(ids: tf.Tensor, lengths: tf.Tensor, beam_size: int) -> decoding.DecodeResult:
        context, state = model.encode(ids, lengths)
        max_lengths = decoding.max_output_lengths(lengths, cfg.max_length_ratio, cfg.max_length_offset)
        return decoding.decode(model.step, state, context, max_lengths, beam_size, cfg.length_penalty)

    def text_endpoint(beam_size: int, with_attention: bool = False):
        def translate(text: tf.Tensor) -> dict[str, tf.Tensor]:
            ids, lengths = source.encode(text, cfg.max_source_length)
            # An empty batch or empty lines: decode at least one token so shapes stay valid.
            result = search(ids, tf.maximum(lengths, 1), beam_size)
            out_ids, out_lengths = result.ids[:, 0], result.lengths[:, 0]
            translations = target.decode(out_ids, _text_lengths(out_lengths, out_ids))
            empty = tf.equal(lengths, 0)
            outputs = {
                "translations": tf.where(empty, "", translations),
                "scores": tf.where(empty, 0.0, result.scores[:, 0]),
            }
            if with_attention:
                # The best hypothesis' weights [batch, output pieces incl. EOS, source pieces],
                # with the pieces as strings; rows past target_lengths and columns past
                # source_lengths are padding.
                outputs.update({
                    "source_tokens": source.sentencepiece.id_to_string(ids),
                    "source_lengths": lengths,
                    "target_tokens": target.sentencepiece.id_to_string(out_ids),
                    "target_lengths": tf.where(empty, 0, out_lengths),
                    "attention": result.attention[:, 0, :, : tf.shape(ids)[1]],
                })
            return outputs

        return translate

    def inspect(text: tf.Tensor) -> dict[str, tf.Tensor]:
        ids, lengths = source.encode(text, cfg.max_source_length)
        return {"tokens": source.sentencepiece.id_to_string(ids), "lengths": lengths,
                "states": translator.encoder_states(ids, lengths)}

    def translate_ids(ids: tf.Tensor, lengths: tf.Tensor) -> dict[str, tf.Tensor]:
        ids, lengths = checked_ids(ids, lengths, translator.source_tokenizer.vocab_size, cfg.max_source_length)
        result = search(ids, tf.maximum(lengths, 1), cfg.beam_size)
        return {"ids": result.ids[:, 0], "lengths": result.lengths[:, 0], "scores": result.scores[:, 0]}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.track(source)
    archive.track(target)
    archive.add_endpoint("translate", text_endpoint(cfg.beam_size), input_signature=[TEXT])
    archive.add_endpoint("translate_greedy", text_endpoint(1), input_signature=[TEXT])
    archive.add_endpoint("translate_ids", translate_ids, input_signature=[IDS, LENGTHS])
    archive.add_endpoint("translate_attention", text_endpoint(cfg.beam_size, with_attention=True), input_signature=[TEXT])
    archive.add_endpoint("inspect", inspect, input_signature=[TEXT])
    return archive


MAX_K = 20  # the most next words the exported next_words signature returns
MAX_GENERATED_TOKENS = 2000  # generate writes at most this many tokens, whatever is asked
INSPECT_K = 5  # next pieces per token in a language model's inspect signature
DEFAULT_K = 5  # serving_default of a language model: text -> its 5 most likely next words


def language_model_archive(lm: LanguageModelRunner, max_k: int = MAX_K) -> keras.export.ExportArchive:
    tokenizer = InGraphTokenizer(lm.tokenizer.model_proto, "tokenizer")
    max_k = min(max_k, lm.max_k)
    beam_size = lm.beam_size_for(max_k)

    def next_words_ids(ids: tf.Tensor, lengths: tf.Tensor, k: tf.Tensor) -> dict[str, tf.Tensor]:
        ids, lengths = checked_ids(ids, lengths, lm.tokenizer.vocab_size, lm.max_prompt_tokens)
        wanted = tf.clip_by_value(k, 1, max_k)
        found = lm.next_words_ids(ids, lengths, tf.reduce_max(tf.concat([wanted, [1]], 0)), beam_size)
        keep = tf.range(tf.shape(found.words)[1])[None, :] < wanted[:, None]
        return {"words": tf.where(keep, found.words, ""), "probabilities": tf.where(keep, found.probabilities, 0.0)}

    def next_words(text: tf.Tensor, k: tf.Tensor) -> dict[str, tf.Tensor]:
        ids, lengths = tokenizer.encode(text, lm.max_prompt_tokens)
        return next_words_ids(ids, lengths, k)

    def generate(text, max_tokens, temperature, top_k, top_p, seed) -> dict[str, tf.Tensor]:
        ids, lengths = tokenizer.encode(text, lm.max_prompt_tokens)
        # Every row samples with its own settings and seed (see decoding.Sampler), so server-side
        # batching of unrelated requests changes nothing; the length is capped in the graph.
        # TF Serving's clients reach this graph unchecked: NaN or infinite settings fail here.
        temperature = tf.debugging.check_numerics(temperature, "temperature must be a finite number")
        top_p = tf.debugging.check_numerics(top_p, "top_p must be a finite number")
        sampler = decoding.Sampler(temperature, top_k, top_p)
        tokens = tf.clip_by_value(max_tokens, 1, MAX_GENERATED_TOKENS)
        limit = tokens if lm.running_text else tokens + 1
        result = lm.generate_ids(ids, lengths, limit, sampler, seed)
        generated, generated_lengths = result.ids[:, 0], result.lengths[:, 0]
        if not lm.running_text:
            generated_lengths = _text_lengths(generated_lengths, generated)
        both = tf.concat([tf.RaggedTensor.from_tensor(ids, lengths=lengths),
                          tf.RaggedTensor.from_tensor(generated, lengths=generated_lengths)], axis=1)
        if not lm.running_text:
            return {"text": tokenizer.sentencepiece.detokenize(both)}
        # Running text: EOS is a line break, which SentencePiece cannot write. Join the pieces
        # ("▁" is a space, EOS a newline) and drop the space each line starts with, as
        # SentencePiece's own decoder does.
        flat_pieces = tokenizer.sentencepiece.id_to_string(both.flat_values)
        pieces = both.with_flat_values(tf.where(tf.equal(both.flat_values, EOS_ID), "\n", flat_pieces))
        joined = tf.strings.regex_replace(tf.strings.reduce_join(pieces, axis=1), decoding.WORD_START, " ")
        return {"text": tf.strings.regex_replace(joined, "(^|\n) ", r"\1")}

    def inspect(text: tf.Tensor) -> dict[str, tf.Tensor]:
        ids, lengths = tokenizer.encode(text, lm.max_prompt_tokens)
        found = lm.trace_ids(ids, lengths, INSPECT_K)
        start = tf.fill([tf.shape(ids)[0], 1], lm.start_id)
        return {"tokens": tokenizer.sentencepiece.id_to_string(tf.concat([start, ids], axis=1)),
                "lengths": found["lengths"], "states": found["states"],
                "top_tokens": tokenizer.sentencepiece.id_to_string(found["top_ids"]),
                "top_probabilities": found["top_probabilities"]}

    def top_words(text: tf.Tensor) -> dict[str, tf.Tensor]:
        return next_words(text, tf.fill(tf.shape(text), DEFAULT_K))

    archive = keras.export.ExportArchive()
    archive.track(lm.model)
    archive.track(tokenizer)
    archive.add_endpoint("serving_default", top_words, input_signature=[TEXT])
    archive.add_endpoint("next_words", next_words, input_signature=[TEXT, tf.TensorSpec([None], tf.int32, name="k")])
    archive.add_endpoint(
        "generate", generate,
        input_signature=[TEXT, tf.TensorSpec([None], tf.int32, name="max_tokens"),
                         tf.TensorSpec([None], tf.float32, name="temperature"),
                         tf.TensorSpec([None], tf.int32, name="top_k"), tf.TensorSpec([None], tf.float32, name="top_p"),
                         tf.TensorSpec([None], tf.int32, name="seed")],
    )
    archive.add_endpoint("inspect", inspect, input_signature=[TEXT])
    archive.add_endpoint("next_words_ids", next_words_ids, input_signature=[IDS, LENGTHS, tf.TensorSpec([None], tf.int32, name="k")])
    return archive


def _description(predictor: Any) -> dict[str, Any]:
    config = predictor.config
    if isinstance(predictor, LanguageModelRunner):
        return {"task": "lm", "max_k": min(MAX_K, predictor.max_k), "running_text": predictor.running_text,
                "max_prompt_tokens": predictor.max_prompt_tokens}
    return {"task": "translation", "beam_size": config.decode.beam_size,
            "max_source_tokens": config.decode.max_source_length}


def next_version(out_dir: Path) -> int:
    versions = [int(p.name) for p in out_dir.iterdir() if p.is_dir() and p.name.isdigit()] if out_dir.is_dir() else []
    return max(versions, default=0) + 1


def export(run_dir: str | Path, out_dir: str | Path, version: int | None = None, weights: str = "best") -> Path:
    """Writes ``out_dir/<version>/`` (the next free version by default) atomically: the SavedModel
    is written next to it under a hidden name and renamed when complete, so a server watching
    ``out_dir`` never sees half a model."""
    predictor: Any = load(run_dir, weights)
    out_dir = Path(out_dir)
    version = version if version is not None else next_version(out_dir)
    if version < 1:
        raise NmtError(f"--version must be a positive integer, got {version}")
    final = out_dir / str(version)
    if final.exists():
        raise NmtError(f"{final} exists: TF Serving versions are immutable; choose another --version")
    staging = out_dir / f".tmp-{version}-{os.getpid()}"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
        archive = language_model_archive(predictor) if isinstance(predictor, LanguageModelRunner) else translation_archive(predictor)
        archive.write_out(str(staging), verbose=False)
        # What `nmt serve` needs to know beyond the signatures (TF Serving ignores assets.extra).
        extra = staging / "assets.extra"
        extra.mkdir(exist_ok=True)
        (extra / "nmt.json").write_text(json.dumps(_description(predictor)), encoding="utf-8")
        os.replace(staging, final)
    except (tf.errors.ResourceExhaustedError, OSError) as error:
        # TensorFlow's writers report a full disk as ResourceExhaustedError, Python's as ENOSPC.
        if not is_disk_full(error):
            raise
        raise NmtError(f"no space left on device while writing {final}; free some space and export again") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final
