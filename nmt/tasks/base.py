"""What every task provides, and the data preparation they share.

A task (fairseq's idea) owns what differs between translation and language modelling: which
tokenizers it trains and how it encodes its data, the model it builds, the predictor that wraps a
trained model, how it scores dev data and picks the best weights, and its export signatures. The
trainer, the exporter, the server and the CLI ask the task; none of them asks which task it is.
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from nmt.config import Config
from nmt.corpus_checks import Overlap, count_overlap
from nmt.data import CorpusStream, configured_stream
from nmt.errors import NmtError
from nmt.pipeline import EncodedCorpus, TokenCache, build_token_cache
from nmt.run_dir import RunDir
from nmt.signatures import TASK_DESCRIPTIONS, ServingRecord
from nmt.tokenizer import Tokenizer

log = logging.getLogger(__name__)

Encoder = Callable[[list[str], list], EncodedCorpus]


def evenly_spaced(count: int, limit: int | None, stretches: int | None = None) -> list[int]:
    """Indices of ``limit`` of ``count`` items spread evenly over all of them (every index when
    ``limit`` is None or not less): ``stretches`` runs of consecutive items (for running text, which
    needs its context) with equal gaps between them, or (None) items one by one, every
    ``count/limit``-th. Deterministic. Dev scoring during training reads such a subset rather than
    the first ``limit`` lines: the start of a dev set can be easier than the rest, which would
    flatter the model and its selection."""
    if limit is None or count <= limit:
        return list(range(count))
    stretches = limit if stretches is None else max(1, min(stretches, limit))
    indices: list[int] = []
    for j in range(stretches):
        # Stretch j: its share of the limit, after the stretches before it and its share of the gaps.
        start = limit * j // stretches + (count - limit) * j // stretches
        indices.extend(range(start, start + limit * (j + 1) // stretches - limit * j // stretches))
    return indices


@dataclasses.dataclass
class PreparedData:
    """Tokenizers and data of a run. A task with one tokenizer puts it in both fields; a language
    model's dev text is in ``dev_texts`` with ``dev_targets`` empty."""

    source_tokenizer: Tokenizer
    target_tokenizer: Tokenizer
    train: TokenCache | None  # on disk, streamed; None: the dev set alone (scoring a trained run)
    dev_texts: list[str]
    dev_targets: list[str]
    dev: EncodedCorpus | None  # the dev set encoded for a loss, where the task scores one
    dev_overlap: Overlap | None = None  # dev examples the training data holds too (prepare_data counts them)


class Task(abc.ABC):
    """One kind of model. Subclasses set ``name`` (a :mod:`nmt.signatures` task name) and ``units``
    (what one training example is called in messages)."""

    name: str
    units: str

    def __init__(self, config: Config) -> None:
        self.config = config

    # --- data ----------------------------------------------------------------------------------

    @property
    def carries_state(self) -> bool:
        """Whether training carries the recurrent state from one batch to the next (TBPTT)."""
        return False

    @abc.abstractmethod
    def tokenizer_files(self, run_dir: RunDir) -> tuple[Path, Path]:
        """(source, target) SentencePiece model files; the same file twice for one tokenizer."""

    def load_tokenizers(self, run_dir: RunDir) -> tuple[Tokenizer, Tokenizer]:
        """The (source, target) tokenizers of a trained run."""
        source_path, target_path = self.tokenizer_files(run_dir)
        return Tokenizer.load(source_path), Tokenizer.load(target_path)

    def training_stream(self) -> CorpusStream:
        return configured_stream(self.config)

    @abc.abstractmethod
    def train_tokenizers(self, stream: CorpusStream, options: dict[str, Any]) -> tuple[Tokenizer, Tokenizer]: ...

    @abc.abstractmethod
    def cache_encoder(self, source: Tokenizer, target: Tokenizer) -> Encoder:
        """How a chunk of training examples is tokenized into the cache (with the length limits)."""

    @abc.abstractmethod
    def read_dev(self, source: Tokenizer, target: Tokenizer) -> tuple[list[str], list[str], EncodedCorpus | None]: ...

    @abc.abstractmethod
    def training_dataset(self, train: TokenCache) -> tf.data.Dataset: ...

    @abc.abstractmethod
    def describe_training_data(self, train: TokenCache) -> str: ...

    # --- model ---------------------------------------------------------------------------------

    @abc.abstractmethod
    def build_model(self, source_vocab_size: int, target_vocab_size: int) -> keras.Model: ...

    @abc.abstractmethod
    def predictor(self, model: keras.Model, source: Tokenizer, target: Tokenizer) -> Any:
        """The Python object ``nmt.load`` returns for this task."""

    def with_shortlist(self, predictor: Any, run_dir: RunDir) -> Any:
        """The predictor decoding over the run's vocabulary shortlist (translation only)."""
        raise NmtError(f"{run_dir} is a {TASK_DESCRIPTIONS.get(self.name, self.name)}: vocabulary shortlists are "
                       "for translation (decode.shortlist)")

    def with_lexicon(self, predictor: Any, run_dir: RunDir) -> Any:
        """The predictor suggesting the words of the run's lexicon only (language models)."""
        raise NmtError(f"{run_dir} is a {TASK_DESCRIPTIONS.get(self.name, self.name)}: a lexicon (lexicon.txt) is "
                       "for a language model's suggest; remove the file")

    def build_lexicon(self, run_dir: RunDir, min_count: int) -> list[str]:
        """Writes the run's lexicon from its training text (language models)."""
        raise NmtError(f"{run_dir} is a {TASK_DESCRIPTIONS.get(self.name, self.name)}: a lexicon is for a language "
                       "model's suggest")

    def build_shortlist(self, run_dir: RunDir, first: int, best: int,
                        progress: Callable[[str], None] | None = None) -> Any:
        """Builds the run's vocabulary shortlist from its tokenized training data (translation only)."""
        raise NmtError(f"{run_dir} is a {TASK_DESCRIPTIONS.get(self.name, self.name)}: vocabulary shortlists are "
                       "for translation")

    def training_tokens(self, run_dir: RunDir) -> TokenCache:
        """The run's tokenized training data (its cache, made again if it is gone), no dev set read."""
        stream = self.training_stream()
        source, target = self._tokenizers(run_dir, stream)
        return self._token_cache(run_dir, stream, source, target)

    # --- evaluation and model selection --------------------------------------------------------

    # The dev record's fields that TensorBoard plots (as dev/<name without "dev_">).
    dev_scalars: tuple[str, ...] = ("dev_loss",)

    @abc.abstractmethod
    def dev_scores(self, predictor: Any, data: PreparedData, dev_loss: Callable[[], float] | None,
                   limit: int | None) -> dict[str, Any]:
        """The dev record of one evaluation during training (``dev_loss`` computes the loss of
        ``data.dev`` for tasks that encode one)."""

    @abc.abstractmethod
    def quality(self, scores: dict[str, Any]) -> tuple[float, str]:
        """(higher is better, a description) of a dev record: what selects the best weights."""

    @abc.abstractmethod
    def final_scores(self, predictor: Any, data: PreparedData) -> tuple[dict[str, Any], Any]:
        """The final dev record of the best weights, and its printable summary object."""

    # --- export --------------------------------------------------------------------------------

    @abc.abstractmethod
    def export_archive(self, predictor: Any) -> keras.export.ExportArchive: ...

    @abc.abstractmethod
    def serving_record(self, predictor: Any) -> ServingRecord: ...

    # --- shared --------------------------------------------------------------------------------

    def prepare_data(self, run_dir: RunDir) -> PreparedData:
        """Trains (or reuses) the tokenizers and tokenizes the training corpus once into an on-disk
        cache. The corpus is read as a stream (one pass per tokenizer trained, one to tokenize), so
        memory does not grow with its size; the dev set is read into memory."""
        stream = self.training_stream()
        source, target = self._tokenizers(run_dir, stream)
        train = self._token_cache(run_dir, stream, source, target)
        dev_texts, dev_targets, dev, overlap = ([], [], None, None)
        if self.config.data.dev is not None:
            dev_texts, dev_targets, dev = self.read_dev(source, target)
            overlap = self._dev_overlap(stream, dev_texts, dev_targets)
        return PreparedData(source, target, train, dev_texts, dev_targets, dev, overlap)

    def _dev_overlap(self, stream: CorpusStream, dev_texts: list[str], dev_targets: list[str]) -> Overlap:
        """One more pass over the training stream (nothing of it kept), before the first step: a dev
        set that shares sentences with the training data scores a model too kindly."""
        held_out = list(zip(dev_texts, dev_targets)) if dev_targets else [(text, None) for text in dev_texts]
        overlap = count_overlap(stream, held_out)
        (log.warning if overlap.any else log.info)("%s", overlap.summary("dev"))
        return overlap

    def dev_data(self, source: Tokenizer, target: Tokenizer) -> PreparedData:
        """The dev set alone, without the training data: for scoring a trained run's weights."""
        return PreparedData(source, target, None, *self.read_dev(source, target))

    @property
    def _train_path(self) -> str:
        return str(self.config.data.train.path or self.config.data.train.source_path)

    def _tokenizers(self, run_dir: RunDir, stream: CorpusStream) -> tuple[Tokenizer, Tokenizer]:
        source_path, target_path = self.tokenizer_files(run_dir)
        if source_path.is_file() and target_path.is_file():
            source, target = Tokenizer.load(source_path), Tokenizer.load(target_path)
        else:
            tok = self.config.tokenizer
            log.info("training SentencePiece (%s, vocabulary %d%s) on up to %s sentences sampled from %s",
                     tok.model_type, tok.vocab_size, self._vocabulary_kind(), f"{tok.input_sentence_size:,}",
                     self._train_path)
            options = dict(model_type=tok.model_type, vocab_size=tok.vocab_size,
                           character_coverage=tok.character_coverage, input_sentence_size=tok.input_sentence_size,
                           seed=self.config.seed)
            try:
                source, target = self.train_tokenizers(stream, options)
            except NmtError as error:
                if "empty corpus" in str(error):
                    raise NmtError(f"data.train: no training {self.units} left after dropping empty lines") from None
                raise
            target.save(target_path)
            source.save(source_path)
        log.info("vocabulary: %s", self._vocabulary_sizes(source, target))
        return source, target

    def _vocabulary_kind(self) -> str:
        return ""

    def _vocabulary_sizes(self, source: Tokenizer, target: Tokenizer) -> str:
        return str(target.vocab_size)

    def _token_cache(self, run_dir: RunDir, stream: CorpusStream, source: Tokenizer, target: Tokenizer) -> TokenCache:
        """The cache is keyed by the data config, the files' sizes and times, the limits and the
        tokenizers, so a changed corpus or limit on resume re-tokenizes instead of reusing stale ids."""
        data = self.config.data
        corpus = data.train
        files = [p for p in (corpus.path, corpus.source_path, corpus.target_path, corpus.data_files) if p]
        stamps = [[p, os.stat(p).st_size, os.stat(p).st_mtime_ns] for p in files if os.path.isfile(p)]
        fingerprint = hashlib.sha1(
            json.dumps([self.config.task, self.carries_state, dataclasses.asdict(data.train), stamps,
                        data.max_source_length, data.max_target_length], sort_keys=True).encode()
            + source.model_proto + target.model_proto
        ).hexdigest()[:16]
        cache_path = run_dir.cache / f"train-{fingerprint}"
        train = TokenCache.load(cache_path)
        if train is None:
            log.info("tokenizing %s into %s", self._train_path, cache_path)
            done = [0]

            def progress(count: int) -> None:
                done[0] += count
                if done[0] % 1_000_000 < count:
                    log.info("  %s %s tokenized", f"{done[0]:,}", self.units)

            train = build_token_cache(cache_path, stream, self.cache_encoder(source, target), progress)
            dedup = self.config.data.train.dedup
            duplicates = "" if dedup == "none" else f", {stream.dropped_duplicates:,} duplicates ({dedup})"
            log.info("train: %s %s read from %s (%d empty%s dropped)", f"{done[0]:,}", self.units, self._train_path,
                     stream.dropped_empty, duplicates)
        log.info("%s", self.describe_training_data(train))
        if not len(train):
            if not train.dropped_too_long:
                raise NmtError(f"data.train: no training {self.units} left after dropping empty lines")
            raise NmtError("data: every training example is longer than the length limits in data")
        return train
