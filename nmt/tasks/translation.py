"""Translation: parallel text, a Seq2Seq model, dev BLEU, and text-in/text-out signatures."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from nmt import signatures as sig
from nmt.constraints import InGraphTerminology
from nmt.data import CorpusStream, read_corpus
from nmt.decoding import DecodeResult, length_penalty
from nmt.ensemble import Ensemble
from nmt.evaluation import Scores, bleu_metric, bleu_tokenize, score
from nmt.models import Seq2Seq
from nmt.pipeline import EncodedCorpus, TokenCache, encode_corpus, make_dataset
from nmt.run_dir import RunDir
from nmt.scoring import END_PIECE
from nmt.shortlist import Shortlist, build_shortlist
from nmt.tasks.base import Encoder, PreparedData, Task, evenly_spaced, log
from nmt.text_policy import (
    IDS_SPEC,
    LENGTHS_SPEC,
    TEXT_SPEC,
    InGraphTokenizer,
    checked_ids,
    ids_to_text_in_graph,
    source_ids_in_graph,
    target_ids_in_graph,
    text_lengths_in_graph,
)
from nmt.tokenizer import Tokenizer
from nmt.translator import EMPTY_SOURCE, Translator

TARGET_SPEC = tf.TensorSpec([None], tf.string, name=sig.TARGET)
# translate_constrained's phrases: [batch, phrases] strings, "" where a row has fewer.
CONSTRAINTS_SPEC = tf.TensorSpec([None, None], tf.string, name=sig.CONSTRAINTS)
AVOID_SPEC = tf.TensorSpec([None, None], tf.string, name=sig.AVOID)


class TranslationTask(Task):
    """Source and target text in pairs -> :class:`nmt.translator.Translator`."""

    name = sig.TRANSLATION
    units = "pairs"

    def tokenizer_files(self, run_dir: RunDir) -> tuple[Path, Path]:
        if self.config.tokenizer.shared:
            return run_dir.spm / "shared.model", run_dir.spm / "shared.model"
        return run_dir.spm / "source.model", run_dir.spm / "target.model"

    def train_tokenizers(self, stream: CorpusStream, options: dict[str, Any]) -> tuple[Tokenizer, Tokenizer]:
        if self.config.tokenizer.shared:
            both = Tokenizer.train((text for pair in stream for text in pair), **options)
            return both, both
        return Tokenizer.train((s for s, _ in stream), **options), Tokenizer.train((t for _, t in stream), **options)

    def _vocabulary_kind(self) -> str:
        return ", shared" if self.config.tokenizer.shared else ", separate"

    def _vocabulary_sizes(self, source: Tokenizer, target: Tokenizer) -> str:
        return f"source {source.vocab_size}, target {target.vocab_size}"

    def cache_encoder(self, source: Tokenizer, target: Tokenizer) -> Encoder:
        data = self.config.data

        def encode(sources: list[str], targets: list) -> EncodedCorpus:
            return encode_corpus(sources, targets, source, target, data.max_source_length, data.max_target_length)

        return encode

    def describe_training_data(self, train: TokenCache) -> str:
        data = self.config.data
        return (f"train: {len(train)} pairs kept, {train.dropped_too_long} dropped as longer than "
                f"{data.max_source_length}/{data.max_target_length} tokens or empty once tokenized")

    def read_dev(self, source: Tokenizer, target: Tokenizer) -> tuple[list[str], list[str], EncodedCorpus | None]:
        bleu_metric(bleu_tokenize(self.config.data))  # fails now, not after the first training stretch
        corpus = read_corpus(self.config.data.dev, with_target=True)
        log.info("dev: %d pairs (%d empty dropped)", len(corpus.sources), corpus.dropped_empty)
        # Dev loss uses every pair (no length filter): it must measure the same set each time.
        encoded = encode_corpus(corpus.sources, corpus.targets or [], source, target, 10**9, 10**9)
        return corpus.sources, corpus.targets or [], encoded

    def training_dataset(self, train: TokenCache) -> tf.data.Dataset:
        cfg = self.config.train
        # XLA compiles a program per input shape: with it, batches are padded to their bucket's
        # bound, so there are as many shapes as buckets.
        return make_dataset(train, cfg.batch_size, cfg.batch_tokens, cfg.bucket_width, cfg.shuffle_buffer,
                            seed=self.config.seed, pad_to_bucket=cfg.jit_compile)

    def build_model(self, source_vocab_size: int, target_vocab_size: int) -> keras.Model:
        model = Seq2Seq(source_vocab_size, target_vocab_size, **dataclasses.asdict(self.config.model))
        model.build_weights()
        return model

    def predictor(self, model: keras.Model, source: Tokenizer, target: Tokenizer) -> Translator:
        return Translator(model, source, target, self.config)

    # --- vocabulary shortlists -------------------------------------------------------------------

    def with_shortlist(self, predictor: Translator, run_dir: RunDir) -> Translator:
        shortlist = Shortlist.load(run_dir.shortlist, predictor.source_tokenizer.vocab_size,
                                   predictor.target_tokenizer.vocab_size)
        return predictor.with_shortlist(shortlist)

    def build_shortlist(self, run_dir: RunDir, first: int, best: int,
                        progress: Callable[[str], None] | None = None) -> Shortlist:
        """The shortlist of the run's own tokenized training pairs (the token cache training read),
        saved to ``run_dir/shortlist/``."""
        source, target = self.load_tokenizers(run_dir)
        train = self.training_tokens(run_dir)

        def pairs():
            for sources, targets in train.chunks():
                yield from zip(sources.numpy(), targets.numpy())

        shortlist = build_shortlist(pairs(), source.vocab_size, target.vocab_size, first, best, progress=progress)
        shortlist.save(run_dir.shortlist)
        return shortlist

    # --- evaluation ----------------------------------------------------------------------------

    dev_scalars = ("dev_loss", "dev_bleu", "dev_chrf")

    def dev_scores(self, predictor: Translator, data: PreparedData, dev_loss: Callable[[], float] | None,
                   limit: int | None) -> dict[str, Any]:
        if data.dev is None or not len(data.dev):
            return {}
        picked = evenly_spaced(len(data.dev_texts), limit)
        sources, targets = [data.dev_texts[i] for i in picked], [data.dev_targets[i] for i in picked]
        hypotheses = [h[0].text for h in predictor.translate(sources, beam_size=1)]
        scores = score(hypotheses, targets, bleu_tokenize(self.config.data))
        return {"dev_loss": dev_loss() if dev_loss else float("nan"), "dev_bleu": scores.bleu,
                "dev_chrf": scores.chrf, "dev_sentences": len(sources)}

    def quality(self, scores: dict[str, Any]) -> tuple[float, str]:
        # Highest dev BLEU, ties (common early on, at 0) broken by lower dev loss.
        return scores["dev_bleu"] - 1e-6 * min(scores["dev_loss"], 1e3), f"dev BLEU {scores['dev_bleu']:.2f}"

    def final_scores(self, predictor: Translator, data: PreparedData) -> tuple[dict[str, Any], Scores]:
        hypotheses = [h[0].text for h in predictor.translate(data.dev_texts)]
        scores = score(hypotheses, data.dev_targets, bleu_tokenize(self.config.data))
        record = {"final": True, "beam_size": self.config.decode.beam_size, "dev_bleu": scores.bleu,
                  "dev_chrf": scores.chrf, "bleu_signature": scores.bleu_signature, "time": time.time()}
        return record, scores

    # --- export --------------------------------------------------------------------------------

    def serving_record(self, predictor: Translator) -> sig.ServingRecord:
        cfg = self.config.decode
        return sig.ServingRecord.for_translation(cfg.beam_size, cfg.max_source_length,
                                                 inspect=not isinstance(predictor.model, Ensemble))

    def export_archive(self, predictor: Translator) -> keras.export.ExportArchive:
        """The signatures of :meth:`serving_record`, over :meth:`Translator.search`."""
        max_source = self.config.decode.max_source_length
        source = InGraphTokenizer(predictor.source_tokenizer.model_proto, "source_tokenizer")
        target = InGraphTokenizer(predictor.target_tokenizer.model_proto, "target_tokenizer")
        record = self.serving_record(predictor)

        def answer(result: DecodeResult, ids: tf.Tensor, lengths: tf.Tensor, attention: bool) -> dict[str, tf.Tensor]:
            out_ids, out_lengths = result.ids[:, 0], result.lengths[:, 0]
            texts = ids_to_text_in_graph(
                target, tf.RaggedTensor.from_tensor(out_ids, lengths=text_lengths_in_graph(out_ids, out_lengths)))
            empty = tf.equal(lengths, 0)
            outputs = {"translations": tf.where(empty, "", texts), "scores": tf.where(empty, 0.0, result.scores[:, 0])}
            if attention:
                # The best hypothesis' weights [batch, output pieces incl. EOS, source pieces];
                # rows past target_lengths and columns past source_lengths are padding.
                outputs.update(source_tokens=source.pieces(ids), source_lengths=lengths,
                               target_tokens=target.pieces(out_ids), target_lengths=tf.where(empty, 0, out_lengths),
                               attention=result.attention[:, 0, :, : tf.shape(ids)[1]])
            return outputs

        def text_endpoint(role: sig.SignatureRole) -> Callable:
            def translate(text: tf.Tensor) -> dict[str, tf.Tensor]:
                ids, lengths = source_ids_in_graph(source, text, max_source)
                # Empty lines: search from one pad token so that shapes stay valid, then answer "".
                result = predictor.search(ids, tf.maximum(lengths, 1), role.beam_size, role.attention)
                return answer(result, ids, lengths, role.attention)

            return translate

        terminology = InGraphTerminology(predictor.target_tokenizer, self.config.data.target_language)

        def translate_constrained(text: tf.Tensor, constraints: tf.Tensor, avoid: tf.Tensor) -> dict[str, tf.Tensor]:
            # Translator.translate's terminology, its phrases as strings [batch, n] ("" = none).
            checks = [tf.debugging.assert_equal(tf.shape(constraints)[0], tf.shape(text)[0],
                                                message="translate_constrained: one row of constraints per text"),
                      tf.debugging.assert_equal(tf.shape(avoid)[0], tf.shape(text)[0],
                                                message="translate_constrained: one row of avoided phrases per text")]
            with tf.control_dependencies(checks):
                ids, lengths = source_ids_in_graph(source, text, max_source)
            lengths_or_one = tf.maximum(lengths, 1)
            encoded = terminology.encode(constraints, avoid, predictor.max_output_lengths(lengths_or_one))
            result = predictor.search(ids, lengths_or_one, record.signatures[sig.TRANSLATE_CONSTRAINED].beam_size,
                                      constraints=encoded)
            return answer(result, ids, lengths, False)

        def translate_ids(ids: tf.Tensor, lengths: tf.Tensor) -> dict[str, tf.Tensor]:
            ids, lengths = checked_ids(ids, lengths, predictor.source_tokenizer.vocab_size, max_source)
            result = predictor.search(ids, tf.maximum(lengths, 1), record.signatures[sig.TRANSLATE_IDS].beam_size)
            return {"ids": result.ids[:, 0], "lengths": result.lengths[:, 0], "scores": result.scores[:, 0]}

        def score(text: tf.Tensor, target_text: tf.Tensor) -> dict[str, tf.Tensor]:
            # Translator.score's rules: sources cut as translate cuts them, targets whole, an empty
            # source refused (INVALID_ARGUMENT naming the rule), an empty target scores EOS alone.
            ids, lengths = source_ids_in_graph(source, text, max_source)
            target_ids, target_lengths = target_ids_in_graph(target, target_text)
            checks = [tf.debugging.assert_equal(tf.shape(text), tf.shape(target_text),
                                                message="score: one target per text"),
                      tf.debugging.assert_positive(lengths, message=EMPTY_SOURCE)]
            with tf.control_dependencies(checks):
                pieces = predictor.score_ids(ids, lengths, target_ids, target_lengths)
            total = tf.reduce_sum(pieces, axis=1)
            penalty = length_penalty(target_lengths + 1, self.config.decode.length_penalty)
            tokens = target.pieces(tf.pad(target_ids, [[0, 0], [0, 1]]))
            at_end = tf.range(tf.shape(tokens)[1])[None, :] == target_lengths[:, None]
            return {"scores": total, "normalized_scores": total / penalty, "piece_scores": pieces,
                    "target_tokens": tf.where(at_end, END_PIECE, tokens), "target_lengths": target_lengths + 1}

        def inspect(text: tf.Tensor) -> dict[str, tf.Tensor]:
            ids, lengths = source_ids_in_graph(source, text, max_source)
            states = predictor.inspect.hidden_states_ids(ids, lengths)
            return {"tokens": source.pieces(ids), "lengths": lengths, "states": states}

        archive = keras.export.ExportArchive()
        for tracked in (predictor.model, source, target, terminology):
            archive.track(tracked)
        for name in (sig.TRANSLATE, sig.TRANSLATE_GREEDY, sig.TRANSLATE_ATTENTION):
            archive.add_endpoint(name, text_endpoint(record.signatures[name]), input_signature=[TEXT_SPEC])
        archive.add_endpoint(sig.TRANSLATE_IDS, translate_ids, input_signature=[IDS_SPEC, LENGTHS_SPEC])
        if sig.INSPECT in record.signatures:
            archive.add_endpoint(sig.INSPECT, inspect, input_signature=[TEXT_SPEC])
        archive.add_endpoint(sig.SCORE, score, input_signature=[TEXT_SPEC, TARGET_SPEC])
        archive.add_endpoint(sig.TRANSLATE_CONSTRAINED, translate_constrained,
                             input_signature=[TEXT_SPEC, CONSTRAINTS_SPEC, AVOID_SPEC])
        return archive
