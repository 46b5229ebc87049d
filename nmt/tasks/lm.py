"""Language modelling: one side of the data, a decoder alone, dev perplexity, and next-word,
generation, inspection and gradient signatures."""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from nmt import signatures as sig
from nmt.data import CorpusStream, read_corpus
from nmt.language_model import LanguageModelPredictor
from nmt.lexicon import count_words, read_lexicon, write_lexicon
from nmt.models import LanguageModel
from nmt.next_word import Prefix
from nmt.perplexity import Perplexity, evaluate_perplexity
from nmt.pipeline import EncodedCorpus, TokenCache, encode_texts, make_dataset, make_stream_dataset, token_stream
from nmt.run_dir import RunDir
from nmt.samplers import Sampler
from nmt.tasks.base import Encoder, PreparedData, Task, evenly_spaced, log
from nmt.text_policy import (
    IDS_SPEC,
    LENGTHS_SPEC,
    TEXT_SPEC,
    InGraphTokenizer,
    checked_ids,
    ids_to_text_in_graph,
    prefix_chars_in_graph,
    prompt_ids_in_graph,
    split_typed_word_in_graph,
    text_lengths_in_graph,
)
from nmt.tokenizer import Tokenizer

K = tf.TensorSpec([None], tf.int32, name=sig.K)
GENERATE_SPEC = [TEXT_SPEC, *(tf.TensorSpec([None], dtype, name=name) for name, dtype in (
    (sig.MAX_TOKENS, tf.int32), (sig.TEMPERATURE, tf.float32), (sig.TOP_K, tf.int32), (sig.TOP_P, tf.float32),
    (sig.SEED, tf.int32)))]

# Dev perplexity during training reads the text as this many streams side by side.
DEV_STREAMS = 8


class LanguageModelTask(Task):
    """One text per line (``train.bptt_steps`` null) or running text read in windows with the
    state carried (TBPTT) -> :class:`nmt.language_model.LanguageModelPredictor`."""

    name = sig.LANGUAGE_MODEL
    units = "lines"

    @property
    def carries_state(self) -> bool:
        return self.config.train.bptt_steps is not None

    def tokenizer_files(self, run_dir: RunDir) -> tuple[Path, Path]:
        return run_dir.spm / "shared.model", run_dir.spm / "shared.model"

    def train_tokenizers(self, stream: CorpusStream, options: dict[str, Any]) -> tuple[Tokenizer, Tokenizer]:
        tokenizer = Tokenizer.train((s for s, _ in stream if s), **options)
        return tokenizer, tokenizer

    def cache_encoder(self, source: Tokenizer, target: Tokenizer) -> Encoder:
        # Running text keeps every line (the stream is the text); sentences are length-filtered.
        limit = None if self.carries_state else self.config.data.max_target_length

        def encode(texts: list[str], _: list) -> EncodedCorpus:
            return encode_texts(texts, target, limit)

        return encode

    def describe_training_data(self, train: TokenCache) -> str:
        if self.carries_state:
            return f"train: {len(train)} lines of running text"
        return (f"train: {len(train)} lines kept, {train.dropped_too_long} dropped as longer than "
                f"{self.config.data.max_target_length} tokens or empty once tokenized")

    def read_dev(self, source: Tokenizer, target: Tokenizer) -> tuple[list[str], list[str], EncodedCorpus | None]:
        corpus = read_corpus(self.config.data.dev, with_target=False, keep_empty=self.carries_state)
        log.info("dev: %d lines (%d empty dropped)", len(corpus.sources), corpus.dropped_empty)
        return corpus.sources, [], None

    def training_dataset(self, train: TokenCache) -> tf.data.Dataset:
        cfg = self.config.train
        if self.carries_state:
            # The token stream is laid out in memory (4 bytes per token).
            return make_stream_dataset(token_stream(train.to_corpus()), cfg.batch_size, cfg.bptt_steps)
        return make_dataset(train, cfg.batch_size, cfg.batch_tokens, cfg.bucket_width, cfg.shuffle_buffer,
                            seed=self.config.seed, pad_to_bucket=cfg.jit_compile)

    def build_model(self, source_vocab_size: int, target_vocab_size: int) -> keras.Model:
        model_args = dataclasses.asdict(self.config.model)
        del model_args["encoder"]
        model = LanguageModel(target_vocab_size, **model_args)
        model.build_weights()
        return model

    def predictor(self, model: keras.Model, source: Tokenizer, target: Tokenizer) -> LanguageModelPredictor:
        return LanguageModelPredictor(model, target, self.config)

    def with_lexicon(self, predictor: LanguageModelPredictor, run_dir: RunDir) -> LanguageModelPredictor:
        return predictor.use_lexicon(list(read_lexicon(run_dir.lexicon)))

    def build_lexicon(self, run_dir: RunDir, min_count: int) -> list[str]:
        """The words of the run's training text seen ``min_count`` times or more, and every word of the
        lexicon of the run it was fine-tuned from (``train.init_from``), to ``run_dir/lexicon.txt``."""
        counts = count_words(source for source, _ in self.training_stream())
        kept = Counter({word: count for word, count in counts.items() if count >= min_count})
        source = self.config.train.init_from
        if source is not None and RunDir(Path(source)).lexicon.exists():
            kept.update(read_lexicon(RunDir(Path(source)).lexicon))  # counts add up
        return write_lexicon(run_dir.lexicon, kept)

    # --- evaluation ----------------------------------------------------------------------------

    dev_scalars = ("dev_loss", "dev_word_perplexity", "dev_bits_per_character")

    def dev_scores(self, predictor: LanguageModelPredictor, data: PreparedData, dev_loss: Callable[[], float] | None,
                   limit: int | None) -> dict[str, Any]:
        if not data.dev_texts:
            return {}
        # 8 streams side by side: ~8x faster than the exact one-stream final evaluation, at the
        # price of 7 cuts where the text is read without its context. A subset of running text is
        # taken as 8 stretches, one per stream, so that it adds no cuts of its own.
        picked = evenly_spaced(len(data.dev_texts), limit, DEV_STREAMS if self.carries_state else None)
        return evaluate_perplexity(predictor, [data.dev_texts[i] for i in picked], streams=DEV_STREAMS).dev_record()

    def quality(self, scores: dict[str, Any]) -> tuple[float, str]:
        return -scores["dev_loss"], f"dev loss {scores['dev_loss']:.4f}"

    def final_scores(self, predictor: LanguageModelPredictor, data: PreparedData) -> tuple[dict[str, Any], Perplexity]:
        perplexity = evaluate_perplexity(predictor, data.dev_texts)
        return {"final": True, **perplexity.dev_record(), "time": time.time()}, perplexity

    # --- export --------------------------------------------------------------------------------

    def serving_record(self, predictor: LanguageModelPredictor) -> sig.ServingRecord:
        return sig.ServingRecord.for_language_model(min(sig.MAX_EXPORTED_K, predictor.max_k),
                                                    predictor.max_prompt_tokens, predictor.running_text)

    def export_archive(self, predictor: LanguageModelPredictor) -> keras.export.ExportArchive:
        lm = predictor
        tokenizer = InGraphTokenizer(lm.tokenizer.model_proto, "tokenizer")
        max_k = self.serving_record(lm).max_k
        beam_size = lm.beam_size_for(max_k)

        def next_words_ids(ids: tf.Tensor, lengths: tf.Tensor, k: tf.Tensor) -> dict[str, tf.Tensor]:
            ids, lengths = checked_ids(ids, lengths, lm.tokenizer.vocab_size, lm.max_prompt_tokens)
            wanted = tf.clip_by_value(k, 1, max_k)
            found = lm.next_words_ids(ids, lengths, tf.reduce_max(tf.concat([wanted, [1]], 0)), beam_size)
            keep = tf.range(tf.shape(found.words)[1])[None, :] < wanted[:, None]
            return {"words": tf.where(keep, found.words, ""), "probabilities": tf.where(keep, found.probabilities, 0.0)}

        def next_words(text: tf.Tensor, k: tf.Tensor) -> dict[str, tf.Tensor]:
            return next_words_ids(*prompt_ids_in_graph(tokenizer, text, lm.max_prompt_tokens), k)

        def suggest(text: tf.Tensor, k: tf.Tensor) -> dict[str, tf.Tensor]:
            # A keyboard's call: the word being typed cut off at its last boundary (text policy rule 5)
            # and completed, or the next words after a space.
            contexts, prefixes = split_typed_word_in_graph(text)
            ids, lengths = prompt_ids_in_graph(tokenizer, contexts, lm.max_prompt_tokens)
            wanted = tf.clip_by_value(k, 1, max_k)
            found = lm.next_words_ids(ids, lengths, tf.reduce_max(tf.concat([wanted, [1]], 0)), beam_size,
                                      Prefix(*prefix_chars_in_graph(prefixes)))
            keep = tf.range(tf.shape(found.words)[1])[None, :] < wanted[:, None]
            return {"completing": prefixes, "words": tf.where(keep, found.words, ""),
                    "probabilities": tf.where(keep, found.probabilities, 0.0)}

        def generate(text, max_tokens, temperature, top_k, top_p, seed) -> dict[str, tf.Tensor]:
            ids, lengths = prompt_ids_in_graph(tokenizer, text, lm.max_prompt_tokens)
            # Every row samples with its own settings and seed (see Sampler), so server-side
            # batching of unrelated requests changes nothing; the length is capped in the graph.
            # TF Serving's clients reach this graph unchecked: NaN or infinite settings fail here.
            temperature = tf.debugging.check_numerics(temperature, "temperature must be a finite number")
            top_p = tf.debugging.check_numerics(top_p, "top_p must be a finite number")
            tokens = tf.clip_by_value(max_tokens, 1, sig.MAX_GENERATED_TOKENS)
            result = lm.generate_ids(ids, lengths, tokens, Sampler(temperature, top_k, top_p), seed)
            written, written_lengths = result.ids[:, 0], result.lengths[:, 0]
            if not lm.running_text:
                written_lengths = text_lengths_in_graph(written, written_lengths)
            both = tf.concat([tf.RaggedTensor.from_tensor(ids, lengths=lengths),
                              tf.RaggedTensor.from_tensor(written, lengths=written_lengths)], axis=1)
            return {"text": ids_to_text_in_graph(tokenizer, both, lm.running_text)}

        def inspect(text: tf.Tensor) -> dict[str, tf.Tensor]:
            ids, lengths = prompt_ids_in_graph(tokenizer, text, lm.max_prompt_tokens)
            found = lm.inspect.hidden_states_ids(ids, lengths, sig.INSPECT_K)
            start = tf.fill([tf.shape(ids)[0], 1], lm.start_id)
            return {"tokens": tokenizer.pieces(tf.concat([start, ids], axis=1)), "lengths": found["lengths"],
                    "states": found["states"], "top_tokens": tokenizer.pieces(found["top_ids"]),
                    "top_probabilities": found["top_probabilities"]}

        def gradients(text: tf.Tensor) -> dict[str, tf.Tensor]:
            # How strongly the likeliest next piece after each text depends on each piece read:
            # norms [batch, time] of LanguageModelInspection.gradients_ids (rows past lengths are padding).
            ids, lengths = prompt_ids_in_graph(tokenizer, text, lm.max_prompt_tokens)
            found = lm.inspect.gradients_ids(ids, lengths)
            start = tf.fill([tf.shape(ids)[0], 1], lm.start_id)
            return {"tokens": tokenizer.pieces(tf.concat([start, ids], axis=1)), "lengths": found["lengths"],
                    "norms": found["norms"], "next_token": tokenizer.pieces(found["target_ids"]),
                    "log_probability": found["log_probabilities"]}

        def top_words(text: tf.Tensor) -> dict[str, tf.Tensor]:
            return next_words(text, tf.fill(tf.shape(text), sig.DEFAULT_K))

        archive = keras.export.ExportArchive()
        archive.track(lm.model)
        archive.track(tokenizer)
        if lm.lexicon is not None:
            archive.track(lm.lexicon)  # its hash table, saved with the model
        archive.add_endpoint(sig.SERVING_DEFAULT, top_words, input_signature=[TEXT_SPEC])
        archive.add_endpoint(sig.NEXT_WORDS, next_words, input_signature=[TEXT_SPEC, K])
        archive.add_endpoint(sig.SUGGEST, suggest, input_signature=[TEXT_SPEC, K])
        archive.add_endpoint(sig.GENERATE, generate, input_signature=GENERATE_SPEC)
        archive.add_endpoint(sig.INSPECT, inspect, input_signature=[TEXT_SPEC])
        archive.add_endpoint(sig.GRADIENTS, gradients, input_signature=[TEXT_SPEC])
        archive.add_endpoint(sig.NEXT_WORDS_IDS, next_words_ids, input_signature=[IDS_SPEC, LENGTHS_SPEC, K])
        return archive
