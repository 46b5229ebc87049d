"""Training: data -> tokenizers -> batches -> model -> checkpoints, resumable, with dev selection.

Everything a trained model is goes into one run directory::

    config.yaml     the resolved config          spm/           SentencePiece models
    checkpoints/    latest states (resume)       best/          weights chosen on dev BLEU (lm: loss)
    cache/          tokenized corpora            metrics.jsonl  one line per evaluation
    logs/           TensorBoard                  .lock          held by the one trainer at work here

A resume starts from the newest checkpoint whose files read back whole (TensorFlow's state file
is repaired if it names another); a full disk, a second trainer or a diverging loss stop training
with a one-line NmtError and leave the files as they were before.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
import yaml

from nmt.checkpoints import remove_partial_saves
from nmt.config import Config, save_config
from nmt.data import CorpusStream, read_corpus
from nmt.distribute import from_chief, is_chief, make_strategy, worker_dir
from nmt.errors import NmtError
from nmt.evaluation import Scores, bleu_tokenize, score
from nmt.inference import BEST_WEIGHTS, LanguageModelRunner, Perplexity, Translator, build_model, tokenizer_paths
from nmt.models import model_variables
from nmt.pipeline import (
    EncodedCorpus, TokenCache, build_token_cache, encode_corpus, encode_texts, make_dataset, make_stream_dataset,
    token_stream,
)
from nmt.run_dir import append_line, hold_run_dir, resume_point, start_over, writing
from nmt.tokenizer import PAD_ID, Tokenizer


# train_loss in metrics.jsonl is the mean of the last this many step losses (kept in the checkpoint).
TRAIN_LOSS_WINDOW = 100


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class LearningRate(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up, then constant, inverse-square-root or cosine decay to 10% at ``total``."""

    def __init__(self, peak: float, warmup: int, decay: str, total: int) -> None:
        self.peak, self.warmup, self.decay, self.total = peak, warmup, decay, total

    def __call__(self, step: Any) -> tf.Tensor:
        step = tf.cast(step, tf.float32) + 1.0
        warmup = float(max(self.warmup, 1))
        rate = self.peak * tf.minimum(1.0, step / warmup)
        if self.decay == "inverse_sqrt":
            rate = rate * tf.minimum(1.0, tf.sqrt(warmup / step))
        elif self.decay == "cosine":
            progress = tf.clip_by_value((step - warmup) / max(self.total - warmup, 1), 0.0, 1.0)
            rate = rate * (0.1 + 0.45 * (1.0 + tf.cos(math.pi * progress)))
        return rate

    def get_config(self) -> dict[str, Any]:
        return {"peak": self.peak, "warmup": self.warmup, "decay": self.decay, "total": self.total}


def token_loss(logits: tf.Tensor, labels: tf.Tensor, label_smoothing: float = 0.0) -> tuple[tf.Tensor, tf.Tensor]:
    """Mean cross-entropy per non-padding target token, and that token count."""
    log_probs = tf.nn.log_softmax(tf.cast(logits, tf.float32))
    nll = -tf.gather(log_probs, labels, batch_dims=2)
    if label_smoothing:
        nll = (1.0 - label_smoothing) * nll - label_smoothing * tf.reduce_mean(log_probs, axis=-1)
    mask = tf.cast(tf.not_equal(labels, PAD_ID), tf.float32)
    tokens = tf.reduce_sum(mask)
    return tf.reduce_sum(nll * mask) / tf.maximum(tokens, 1.0), tokens


BATCH_SPEC = {
    "source": tf.TensorSpec([None, None], tf.int32),
    "source_length": tf.TensorSpec([None], tf.int32),
    "target_in": tf.TensorSpec([None, None], tf.int32),
    "target_out": tf.TensorSpec([None, None], tf.int32),
}
STREAM_BATCH_SPEC = {
    "target_in": tf.TensorSpec([None, None], tf.int32),
    "target_out": tf.TensorSpec([None, None], tf.int32),
    "first": tf.TensorSpec([], tf.bool),
}


@dataclasses.dataclass
class PreparedData:
    """Tokenizers and data of a run. A language model has one tokenizer (both fields) and its
    dev text in ``dev_sources``."""

    source_tokenizer: Tokenizer
    target_tokenizer: Tokenizer
    train: TokenCache  # on disk, streamed
    dev_sources: list[str]
    dev_targets: list[str]
    dev: EncodedCorpus | None


def _check_compatible(run_dir: Path, config: Config) -> None:
    """A run directory keeps one model: refuse to resume it with another architecture."""
    stored_path = run_dir / "config.yaml"
    if not stored_path.is_file():
        return
    stored = yaml.safe_load(stored_path.read_text(encoding="utf-8")) or {}
    current = config.to_dict()
    # Only what has been built binds: tokenizers once trained, the model once checkpointed.
    built = {"tokenizer": (run_dir / "spm").is_dir(), "model": (run_dir / "checkpoints").is_dir()}
    if built["model"] and config.train.bptt_steps is not None:
        # The carried TBPTT state is [batch_size, units] and the data iterator's position is
        # counted in windows: both are in the checkpoint.
        for key in ("bptt_steps", "batch_size"):
            before = (stored.get("train") or {}).get(key)
            if before != getattr(config.train, key):
                raise NmtError(
                    f"{run_dir} was trained with train.{key}={before!r} (now {getattr(config.train, key)!r}); "
                    "a running-text model resumes only with the same value: choose another run_dir or restore it"
                )
    for section in ("model", "tokenizer"):
        if built[section] and stored.get(section) != current[section]:
            differences = [
                f"{section}.{k}: {stored.get(section, {}).get(k)!r} -> {v!r}"
                for k, v in current[section].items()
                if stored.get(section, {}).get(k) != v
            ]
            raise NmtError(
                f"{run_dir} holds a model trained with another {section} config "
                f"({'; '.join(differences)}); choose another run_dir or delete this one"
            )


def prepare_data(config: Config, run_dir: Path) -> PreparedData:
    """Trains (or reuses) the tokenizers and tokenizes the training corpus once into an on-disk
    cache. The corpus is read as a stream (one pass per tokenizer trained, one to tokenize), so
    memory does not grow with its size; the dev set is read into memory."""
    lm = config.task == "lm"
    running_text = lm and config.train.bptt_steps is not None
    train_stream = CorpusStream(config.data.train, with_target=not lm, keep_empty=running_text)
    where = config.data.train.path or config.data.train.source_path
    what = "lines" if lm else "pairs"
    tok = config.tokenizer
    source_path, target_path = tokenizer_paths(run_dir, config)
    if source_path.is_file() and target_path.is_file():
        source_tokenizer, target_tokenizer = Tokenizer.load(source_path), Tokenizer.load(target_path)
    else:
        log(f"training SentencePiece ({tok.model_type}, vocabulary {tok.vocab_size}"
            f"{'' if lm else ', shared' if tok.shared else ', separate'}) on up to {tok.input_sentence_size:,} "
            f"sentences sampled from {where}")
        options = dict(
            model_type=tok.model_type, vocab_size=tok.vocab_size, character_coverage=tok.character_coverage,
            input_sentence_size=tok.input_sentence_size, seed=config.seed,
        )
        try:
            if lm:
                source_tokenizer = target_tokenizer = Tokenizer.train((s for s, _ in train_stream if s), **options)
            elif tok.shared:
                both = (text for pair in train_stream for text in pair)
                source_tokenizer = target_tokenizer = Tokenizer.train(both, **options)
            else:
                source_tokenizer = Tokenizer.train((s for s, _ in train_stream), **options)
                target_tokenizer = Tokenizer.train((t for _, t in train_stream), **options)
        except NmtError as error:
            if "empty corpus" in str(error):
                raise NmtError(f"data.train: no training {what} left after dropping empty lines") from None
            raise
        target_tokenizer.save(target_path)
        source_tokenizer.save(source_path)
    log(f"vocabulary: {target_tokenizer.vocab_size}" if lm else
        f"vocabulary: source {source_tokenizer.vocab_size}, target {target_tokenizer.vocab_size}")

    # The cache is keyed by the data config, the files' sizes and times, the limits and the
    # tokenizers, so a changed corpus or limit on resume re-tokenizes instead of reusing stale ids.
    source = config.data.train
    files = [p for p in (source.path, source.source_path, source.target_path, source.data_files) if p]
    stamps = [[p, os.stat(p).st_size, os.stat(p).st_mtime_ns] for p in files if os.path.isfile(p)]
    fingerprint = hashlib.sha1(
        json.dumps([config.task, running_text, dataclasses.asdict(source), stamps, config.data.max_source_length,
                    config.data.max_target_length], sort_keys=True).encode()
        + source_tokenizer.model_proto + target_tokenizer.model_proto
    ).hexdigest()[:16]
    cache_path = run_dir / "cache" / f"train-{fingerprint}"
    train = TokenCache.load(cache_path)
    if train is None:
        if lm:
            # Running text keeps every line (the stream is the text); sentences are length-filtered.
            limit = None if running_text else config.data.max_target_length

            def encode(texts: list[str], _: list) -> EncodedCorpus:
                return encode_texts(texts, target_tokenizer, limit)
        else:
            def encode(sources: list[str], targets: list) -> EncodedCorpus:
                return encode_corpus(sources, targets, source_tokenizer, target_tokenizer,
                                     config.data.max_source_length, config.data.max_target_length)

        log(f"tokenizing {where} into {cache_path}")
        done = [0]

        def progress(count: int) -> None:
            done[0] += count
            if done[0] % 1_000_000 < count:
                log(f"  {done[0]:,} {what} tokenized")

        train = build_token_cache(cache_path, train_stream, encode, progress)
        log(f"train: {done[0]:,} {what} read from {where} ({train_stream.dropped_empty} empty dropped)")
    if running_text:
        log(f"train: {len(train)} lines of running text")
    elif lm:
        log(f"train: {len(train)} lines kept, {train.dropped_too_long} dropped as longer than "
            f"{config.data.max_target_length} tokens or empty once tokenized")
    else:
        log(f"train: {len(train)} pairs kept, {train.dropped_too_long} dropped as longer than "
            f"{config.data.max_source_length}/{config.data.max_target_length} tokens or empty once tokenized")
    if not len(train):
        if not train.dropped_too_long:
            raise NmtError(f"data.train: no training {what} left after dropping empty lines")
        raise NmtError("data: every training example is longer than the length limits in data")

    dev_sources: list[str] = []
    dev_targets: list[str] = []
    dev = None
    if config.data.dev is not None:
        dev_corpus = read_corpus(config.data.dev, with_target=not lm, keep_empty=running_text)
        dev_sources, dev_targets = dev_corpus.sources, dev_corpus.targets or []
        if not lm:
            # Dev loss uses every pair (no length filter): it must measure the same set each time.
            dev = encode_corpus(dev_sources, dev_targets, source_tokenizer, target_tokenizer, 10**9, 10**9)
        log(f"dev: {len(dev_sources)} {what} ({dev_corpus.dropped_empty} empty dropped)")
    return PreparedData(source_tokenizer, target_tokenizer, train, dev_sources, dev_targets, dev)


def _recent_loss(window: tf.Variable, count: tf.Variable, last: int) -> float:
    """The mean of the last ``last`` step losses in the ring buffer ``window``, oldest first (the
    order of the plain list it replaces, so the same sum)."""
    seen = int(count)
    kept = min(seen, TRAIN_LOSS_WINDOW, last)
    if not kept:
        return float("nan")
    values = window.numpy().astype(np.float64)
    return float(np.mean(values[[(seen - kept + i) % TRAIN_LOSS_WINDOW for i in range(kept)]]))


def _weights_finite(model: keras.Model) -> bool:
    return bool(tf.reduce_all([tf.reduce_all(tf.math.is_finite(v)) for v in model.trainable_variables]))


def _checkpoint_objects(model: keras.Model, optimizer: keras.optimizers.Optimizer, iterator: Any,
                        best_score: tf.Variable, stale_evals: tf.Variable, carried: Any,
                        recent: dict[str, tf.Variable]) -> dict[str, Any]:
    """What a checkpoint holds. "best_bleu" names the dev score in checkpoints written before
    language models; "train_losses" (the recent-loss window) is missing from checkpoints written
    before it existed, which are restored without it."""
    return dict(
        model=model_variables(model), optimizer=optimizer, data=iterator, best_bleu=best_score,
        stale_evals=stale_evals,
        carried_state={f"state_{i}": v for i, v in enumerate(tf.nest.flatten(carried))},
        train_losses=recent,
    )


class Trainer:
    """Runs ``config`` in ``config.run_dir``; calling :meth:`train` again resumes where it stopped
    (from the newest intact checkpoint). ``restart``: delete the run's checkpoints, best weights
    and metrics first and train from step 0 (without it, a run directory that holds checkpoints is
    never started over)."""

    def __init__(self, config: Config, restart: bool = False) -> None:
        self.config = config
        self.run_dir = Path(config.run_dir)
        self.restart = restart
        self._dev_batches: tf.data.Dataset | None = None

    def _evaluate(self, predictor: Translator | LanguageModelRunner, data: PreparedData, eval_loss, beam_size: int, limit: int | None) -> dict[str, Any]:
        result: dict[str, Any] = {}
        if isinstance(predictor, LanguageModelRunner):
            if data.dev_sources:
                # 8 streams side by side: ~8x faster than the exact one-stream final evaluation,
                # at the price of 7 cuts where the text is read without its context.
                result.update(_perplexity_record(predictor.evaluate(data.dev_sources[:limit], streams=8)))
            return result
        translator = predictor
        if data.dev is not None and len(data.dev):
            total, tokens = 0.0, 0.0
            if self._dev_batches is None:  # built once, iterated at every evaluation
                self._dev_batches = make_dataset(data.dev, batch_size=64, repeat=False, shuffle=False)
            for batch in self._dev_batches:
                loss, count = eval_loss(batch)
                total += float(loss) * float(count)
                tokens += float(count)
            result["dev_loss"] = total / max(tokens, 1.0)
            sources, targets = data.dev_sources[:limit], data.dev_targets[:limit]
            hypotheses = [h[0].text for h in translator.translate(sources, beam_size=beam_size)]
            scores = score(hypotheses, targets, bleu_tokenize(self.config.data))
            result.update(dev_bleu=scores.bleu, dev_chrf=scores.chrf, dev_sentences=len(sources))
        return result

    def train(self) -> Scores | Perplexity | None:
        # The strategy first: a cluster must be set up before TensorFlow runs anything else.
        strategy = make_strategy(self.config.train.distribute)
        chief, run_dir = is_chief(strategy), self.run_dir
        work_dir = worker_dir(strategy, run_dir)  # tokenizers and cache: the chief's are the run's
        # The chief holds the run directory; the other workers of its cluster write only their own scratch folders.
        with hold_run_dir(run_dir) if chief else contextlib.nullcontext():
            if self.restart and chief:
                start_over(run_dir)
            return self._train_holding(strategy, work_dir)

    def _train_holding(self, strategy: tf.distribute.Strategy, work_dir: Path) -> Scores | Perplexity | None:
        config, cfg, run_dir = self.config, self.config.train, self.run_dir
        replicas, chief = strategy.num_replicas_in_sync, is_chief(strategy)
        _check_compatible(run_dir, config)
        work_dir.mkdir(parents=True, exist_ok=True)
        if chief:
            save_config(config, run_dir / "config.yaml")
        keras.utils.set_random_seed(config.seed)
        data = prepare_data(config, work_dir)
        if replicas > 1:
            log(f"distribute: {cfg.distribute}, {replicas} replicas"
                + (f", worker {strategy.cluster_resolver.task_id}" if cfg.distribute == "multi_worker" else "")
                + f"; each takes its share of the global batch of {cfg.batch_size}")
            # Every worker trains its tokenizers from the same data and seed: check they agree.
            fingerprint = int(hashlib.sha1(data.source_tokenizer.model_proto + data.target_tokenizer.model_proto)
                              .hexdigest()[:7], 16)
            if from_chief(strategy, fingerprint) != fingerprint:
                raise NmtError(f"the tokenizers of this worker ({work_dir}) differ from the chief's: all workers must "
                               "read the same training data")

        previous_policy = keras.mixed_precision.global_policy()
        keras.mixed_precision.set_global_policy(cfg.precision)
        try:
            with strategy.scope():
                model = build_model(config, data.source_tokenizer.vocab_size, data.target_tokenizer.vocab_size)
                schedule = LearningRate(cfg.learning_rate, cfg.warmup_steps, cfg.decay, cfg.steps)
                optimizer = keras.optimizers.Adam(learning_rate=schedule)
                if cfg.precision == "mixed_float16":
                    # float16 gradients underflow: the loss is scaled up, and steps with inf/NaN
                    # gradients are skipped while the scale adapts.
                    optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
                optimizer.build(model.trainable_variables)
            self._train_loop(strategy, model, optimizer, schedule, data, work_dir)
        finally:
            keras.mixed_precision.set_global_policy(previous_policy)
        return self.final_evaluation(data) if chief else None

    def _train_loop(self, strategy, model, optimizer, schedule, data: PreparedData, work_dir: Path) -> None:
        config, cfg, run_dir = self.config, self.config.train, self.run_dir
        replicas, chief = strategy.num_replicas_in_sync, is_chief(strategy)
        parameters = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
        log(f"model: {parameters / 1e6:.2f}M parameters" + (f", {cfg.precision}" if cfg.precision != "float32" else "")
            + (", XLA" if cfg.jit_compile else ""))
        running_text = config.task == "lm" and cfg.bptt_steps is not None
        if running_text:
            # The token stream is laid out in memory (4 bytes per token).
            dataset = make_stream_dataset(token_stream(data.train.to_corpus()), cfg.batch_size, cfg.bptt_steps)
        else:
            # XLA compiles a program per input shape: with it, batches are padded to their bucket's
            # bound, so there are as many shapes as buckets.
            dataset = make_dataset(
                data.train, cfg.batch_size, cfg.batch_tokens, cfg.bucket_width, cfg.shuffle_buffer, seed=config.seed,
                pad_to_bucket=cfg.jit_compile,
            )
        # Every worker reads the same global batches (same data, same seed); a plain iterator is
        # checkpointable, which a distributed one is not.
        iterator = iter(dataset)
        # Dev quality of the best weights so far: BLEU for translation, minus the loss for an LM.
        best_score = tf.Variable(-1e9, trainable=False, dtype=tf.float32)
        stale_evals = tf.Variable(0, trainable=False, dtype=tf.int64)
        # TBPTT: the state at the end of one batch starts the next (row r continues row r).
        carried = tf.nest.map_structure(
            lambda t: tf.Variable(tf.cast(t, tf.float32), trainable=False),
            model.initial_state(cfg.batch_size) if running_text else {},
        )
        # The iterator and the carried state are part of the checkpoint: a resumed run continues
        # with the next batch from the same state.
        # The recent step losses (a ring buffer) and how many were seen: train_loss survives a resume.
        recent = {"window": tf.Variable(tf.zeros([TRAIN_LOSS_WINDOW]), trainable=False),
                  "count": tf.Variable(0, trainable=False, dtype=tf.int64)}
        objects = _checkpoint_objects(model, optimizer, iterator, best_score, stale_evals, carried, recent)
        checkpoint = tf.train.Checkpoint(**objects)
        # Only the chief keeps checkpoints; the other workers take part in saving (a collective
        # under multi_worker) into a scratch folder that is deleted. All resume from the chief's.
        save_dir = run_dir / "checkpoints" if chief else work_dir / "checkpoints-scratch"
        latest = resume_point(run_dir / "checkpoints", chief)  # before the manager reads the state file
        manager = tf.train.CheckpointManager(checkpoint, save_dir, max_to_keep=cfg.keep_checkpoints)
        if latest:
            stored = {name.split("/")[0] for name in tf.train.load_checkpoint(str(latest)).get_variable_to_shape_map()}
            restoring = {k: v for k, v in objects.items() if k != "train_losses" or k in stored}
            tf.train.Checkpoint(**restoring).restore(str(latest)).assert_existing_objects_matched()
            log(f"resumed from {latest} at step {_steps_done(optimizer)}")
        if replicas > 1 and from_chief(strategy, _steps_done(optimizer)) != _steps_done(optimizer):
            raise NmtError(f"this worker resumed at step {_steps_done(optimizer)}, not at the chief's: it cannot read "
                           f"the chief's checkpoints in {run_dir / 'checkpoints'} (put run_dir on a shared filesystem)")
        loss_scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)

        @tf.function(jit_compile=cfg.jit_compile, reduce_retracing=True, autograph=False)
        def gradients_of(batch: dict[str, tf.Tensor], state: Any) -> tuple[list, tf.Tensor, tf.Tensor, Any]:
            """Forward and backward on this replica's rows: gradients of the mean loss over its
            tokens (times the loss scale under float16), that loss, the token count, final state."""
            with tf.GradientTape() as tape:
                if running_text:
                    logits, final = model.forward(batch["target_in"], state, training=True)
                else:
                    logits, final = model(batch, training=True), state
                loss, tokens = token_loss(logits, batch["target_out"], cfg.label_smoothing)
                scaled = optimizer.scale_loss(loss) if loss_scaled else loss
            return tape.gradient(scaled, model.trainable_variables), loss, tokens, final

        def replica_step(batch: dict[str, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
            context = tf.distribute.get_replica_context()
            if replicas > 1:  # this replica's share of the global batch's rows
                rows = tf.shape(batch["target_in"])[0]
                share = (rows + replicas - 1) // replicas
                first = tf.minimum(context.replica_id_in_sync_group * share, rows)
                batch = {k: v[first : first + share] if v.shape.rank else v for k, v in batch.items()}
            state = {}
            if running_text:
                restart = tf.cast(batch["first"], tf.float32)  # a new pass over the text: zero state
                state = tf.nest.map_structure(lambda v: tf.cast(v * (1.0 - restart), model.compute_dtype), carried)
            gradients, loss, tokens, final = gradients_of(batch, state)
            # Embedding gradients come as IndexedSlices, one row per token occurrence: summed into
            # dense gradients, so that the clipping norm is the gradient's true norm and every
            # replica count gives the same update.
            gradients = [tf.convert_to_tensor(g) for g in gradients]
            if loss_scaled:
                gradients = [g / optimizer.dynamic_scale for g in gradients]
            if replicas > 1:
                # The global batch's mean loss: each replica's mean weighted by its share of the
                # tokens, summed over replicas.
                all_tokens = context.all_reduce(tf.distribute.ReduceOp.SUM, tokens)
                weight = tokens / tf.maximum(all_tokens, 1.0)
                gradients = context.all_reduce(tf.distribute.ReduceOp.SUM, [g * weight for g in gradients])
                loss = context.all_reduce(tf.distribute.ReduceOp.SUM, loss * weight)
                tokens = all_tokens
            # Clipped after the sum, as one device would: every replica holds the same gradients.
            gradients, norm = tf.clip_by_global_norm(gradients, cfg.clip_norm)
            if loss_scaled:
                gradients = [g * optimizer.dynamic_scale for g in gradients]
            # The optimizer sums over replicas again: hand it 1/N of the (identical) gradients.
            optimizer.apply_gradients(zip([g / replicas for g in gradients] if replicas > 1 else gradients,
                                          model.trainable_variables))
            if running_text:
                tf.nest.map_structure(lambda v, f: v.assign(tf.cast(tf.stop_gradient(f), tf.float32)), carried, final)
            return loss, norm, tokens

        @tf.function(autograph=False, input_signature=[STREAM_BATCH_SPEC if running_text else BATCH_SPEC])
        def train_step(batch: dict[str, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
            results = strategy.run(replica_step, args=(batch,))
            loss, norm, tokens = (strategy.experimental_local_results(r)[0] for r in results)
            slot = tf.math.floormod(recent["count"], TRAIN_LOSS_WINDOW)
            recent["window"].scatter_nd_update([[slot]], [tf.cast(loss, tf.float32)])
            recent["count"].assign_add(1)
            return loss, norm, tokens

        @tf.function(autograph=False, input_signature=[BATCH_SPEC])
        def eval_loss(batch: dict[str, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
            return token_loss(model(batch, training=False), batch["target_out"])

        if config.task == "lm":
            predictor: Translator | LanguageModelRunner = LanguageModelRunner(model, data.target_tokenizer, config)
        else:
            predictor = Translator(model, data.source_tokenizer, data.target_tokenizer, config)
        writer = tf.summary.create_file_writer(str(run_dir / "logs")) if chief else tf.summary.create_noop_writer()
        metrics_path = run_dir / "metrics.jsonl"
        step = _steps_done(optimizer)
        # A live Keras progress bar on a terminal; in a log file, one line every 100 steps instead.
        interactive = sys.stdout.isatty()
        progress = keras.utils.Progbar(cfg.steps, stateful_metrics=["loss", "tok/s", "lr"], unit_name="step")
        if interactive:
            progress.update(step)
        window_tokens, window_start = 0.0, time.perf_counter()
        stopped_early = cfg.early_stopping is not None and int(stale_evals) >= cfg.early_stopping
        if stopped_early:
            log(f"this run stopped early at step {step}; raise train.early_stopping to train on")
        while step < cfg.steps and not stopped_early:
            loss, norm, tokens = train_step(next(iterator))
            step += 1
            # Float16 loss scaling skips steps with inf gradients itself; a non-finite loss, or
            # gradient norm in float32, means the weights are (about to be) NaN: stop, save nothing.
            if not math.isfinite(float(loss)) or (not loss_scaled and not math.isfinite(float(norm))):
                raise self._diverged(step, float(loss), float(norm), manager)
            window_tokens += float(tokens)
            if step % 20 == 0 or step == cfg.steps:
                elapsed = time.perf_counter() - window_start
                rate = window_tokens / max(elapsed, 1e-9)
                lr = float(schedule(step - 1))  # the rate this step's update used
                recent_loss = _recent_loss(recent["window"], recent["count"], 20)
                values = [("loss", recent_loss), ("tok/s", rate), ("lr", lr)]
                if interactive:
                    progress.update(step, values)
                elif step % 100 == 0 or step == cfg.steps:
                    log(f"step {step}/{cfg.steps}: " + ", ".join(f"{k} {v:.4g}" for k, v in values))
                with writer.as_default(step=step):
                    tf.summary.scalar("train/loss", recent_loss)
                    tf.summary.scalar("train/target_tokens_per_second", rate)
                    tf.summary.scalar("train/learning_rate", lr)
                    tf.summary.scalar("train/gradient_norm", float(norm))
                window_tokens, window_start = 0.0, time.perf_counter()
            saving = step % cfg.checkpoint_every == 0 or step == cfg.steps
            if (saving or step % cfg.eval_every == 0) and not _weights_finite(model):
                raise self._diverged(step, float(loss), float(norm), manager)
            if step % cfg.eval_every == 0 or step == cfg.steps:
                # Dev scores once, by the chief; the others wait for its verdict on early stopping.
                if chief:
                    train_loss = _recent_loss(recent["window"], recent["count"], TRAIN_LOSS_WINDOW)
                    stopped_early = self._evaluation_point(
                        step, predictor, data, eval_loss, model, best_score, stale_evals, train_loss, writer,
                        metrics_path,
                    )
                if replicas > 1:
                    stopped_early = bool(from_chief(strategy, int(stopped_early)))
                window_tokens, window_start = 0.0, time.perf_counter()  # evaluation is not training time
            if saving or stopped_early:
                try:
                    with writing(save_dir / f"ckpt-{step}"):
                        manager.save(checkpoint_number=step)
                except NmtError:
                    remove_partial_saves(save_dir)  # give the space back; the earlier checkpoints are whole
                    raise
                if not chief:
                    shutil.rmtree(save_dir, ignore_errors=True)
            if stopped_early:
                log(f"early stopping at step {step}: no dev improvement in {cfg.early_stopping} evaluations")

    def _diverged(self, step: int, loss: float, norm: float, manager: tf.train.CheckpointManager) -> NmtError:
        cfg = self.config.train
        kept = manager.latest_checkpoint
        keeps = f"the last good checkpoint is {kept}" if kept else "no checkpoint had been saved yet"
        return NmtError(
            f"training diverged at step {step} (loss {loss:g}, gradient norm {norm:g}) and stopped before saving "
            f"anything of it; {keeps}: lower train.learning_rate (now {cfg.learning_rate:g}) or train.clip_norm "
            f"(now {cfg.clip_norm:g}), or add train.warmup_steps, then run nmt train again"
            + (" to resume from it" if kept else "")
        )

    def _evaluation_point(self, step, predictor, data, eval_loss, model, best_score, stale_evals, train_loss, writer, metrics_path) -> bool:
        cfg = self.config.train
        result = self._evaluate(predictor, data, eval_loss, beam_size=1, limit=cfg.eval_max_sentences)
        record = {"step": step, "time": time.time(), "train_loss": train_loss, **result}
        append_line(metrics_path, json.dumps(record))
        with writer.as_default(step=step):
            for key in ("dev_loss", "dev_bleu", "dev_chrf", "dev_word_perplexity", "dev_bits_per_character"):
                if key in result:
                    tf.summary.scalar(f"dev/{key[4:]}", result[key])
        summary = ", ".join(f"{k} {v:.3f}" for k, v in record.items() if k not in ("step", "time"))
        log(f"\nstep {step}: {summary}")
        if "dev_loss" not in result:
            # Without a dev set the latest weights are the best we know of; the dev record
            # (best_score, stale_evals) is left alone so that a later run with a dev set starts clean.
            self._save_best(model)
            return False
        if "dev_bleu" in result:
            # Best = highest dev BLEU, ties (common early on, at 0) broken by lower dev loss.
            quality = result["dev_bleu"] - 1e-6 * min(result["dev_loss"], 1e3)
            described = f"dev BLEU {result['dev_bleu']:.2f}"
        else:
            quality = -result["dev_loss"]
            described = f"dev loss {result['dev_loss']:.4f}"
        if quality > float(best_score):
            best_score.assign(quality)
            stale_evals.assign(0)
            self._save_best(model)
            log(f"new best model ({described}) saved to {self.run_dir / BEST_WEIGHTS}")
            return False
        stale_evals.assign_add(1)
        return cfg.early_stopping is not None and int(stale_evals) >= cfg.early_stopping

    def _save_best(self, model: keras.Model) -> None:
        path = self.run_dir / BEST_WEIGHTS
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(".tmp." + path.name)  # Keras wants the .weights.h5 suffix
        # h5py can crash the process (a segfault on close) when the disk fills up under it: check
        # first that the weights fit, with room for HDF5's per-dataset headers.
        needed = sum(np.dtype(v.dtype).itemsize * int(np.prod(v.shape)) + 4096 for v in model.weights) + 65536
        if shutil.disk_usage(path.parent).free < needed:
            raise NmtError(f"no space left on device while writing {path} (it needs about {needed / 2**20:.1f} MiB)")
        try:
            with writing(path):
                model.save_weights(tmp)
        except NmtError:
            tmp.unlink(missing_ok=True)  # the best weights before stay as they were
            raise
        os.replace(tmp, path)

    def final_evaluation(self, data: PreparedData | None = None) -> Scores | Perplexity | None:
        """Dev BLEU of the best weights with the configured beam (a language model: dev
        perplexity of the best weights); printed and stored."""
        from nmt.inference import load

        if self.config.data.dev is None:
            return None
        if data is None:
            data = prepare_data(self.config, self.run_dir)
        predictor = load(self.run_dir)
        if isinstance(predictor, LanguageModelRunner):
            perplexity = predictor.evaluate(data.dev_sources)
            record = {"final": True, **_perplexity_record(perplexity), "time": time.time()}
            append_line(self.run_dir / "metrics.jsonl", json.dumps(record))
            return perplexity
        translator = predictor
        hypotheses = [h[0].text for h in translator.translate(data.dev_sources)]
        scores = score(hypotheses, data.dev_targets, bleu_tokenize(self.config.data))
        record = {"final": True, "beam_size": self.config.decode.beam_size, "dev_bleu": scores.bleu,
                  "dev_chrf": scores.chrf, "bleu_signature": scores.bleu_signature, "time": time.time()}
        append_line(self.run_dir / "metrics.jsonl", json.dumps(record))
        return scores


def _steps_done(optimizer: keras.optimizers.Optimizer) -> int:
    """The optimizer's step count (a distributed variable under a strategy: read as a tensor)."""
    return int(tf.convert_to_tensor(optimizer.iterations.value))


def _perplexity_record(perplexity: Perplexity) -> dict[str, float]:
    return {
        "dev_loss": perplexity.loss,
        "dev_word_perplexity": perplexity.word_perplexity,
        "dev_bits_per_character": perplexity.bits_per_character,
        "dev_nats_per_character": perplexity.nats_per_character,
    }
