"""One training step, for any number of replicas: the loss, its gradients, clipping and the
update, compiled once; the gradient statistics (norm before clipping, clipped steps, per-layer
norms); the learning-rate schedule and the clock of a time budget; the dev loss."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from nmt.config import TrainConfig
from nmt.constants import PAD_ID
from nmt.layers.recurrent import forced_recurrence_path
from nmt.pipeline import EncodedCorpus, make_dataset

# train_loss in metrics.jsonl is the mean of the last this many step losses (kept in the checkpoint).
TRAIN_LOSS_WINDOW = 100


class LearningRate(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up, then constant, inverse-square-root or cosine decay to ``FLOOR`` of the peak
    at the horizon: ``total`` steps, or under a time budget the step training is expected to reach
    when the budget ends (:class:`TrainingTime` gives ``horizon``, a variable, as it measures the
    step rate: the compiled step reads it without being traced again)."""

    FLOOR = 0.1  # of the peak, where cosine decay ends

    def __init__(self, peak: float, warmup: int, decay: str, total: int) -> None:
        self.peak, self.warmup, self.decay = peak, warmup, decay
        self.horizon = tf.Variable(float(total), trainable=False, dtype=tf.float32, name="learning_rate_horizon")

    def __call__(self, step: Any) -> tf.Tensor:
        step = tf.cast(step, tf.float32) + 1.0
        warmup = float(max(self.warmup, 1))
        rate = self.peak * tf.minimum(1.0, step / warmup)
        if self.decay == "inverse_sqrt":
            rate = rate * tf.minimum(1.0, tf.sqrt(warmup / step))
        elif self.decay == "cosine":
            progress = tf.clip_by_value((step - warmup) / tf.maximum(self.horizon - warmup, 1.0), 0.0, 1.0)
            rate = rate * (self.FLOOR + (1.0 - self.FLOOR) / 2 * (1.0 + tf.cos(math.pi * progress)))
        return rate

    def get_config(self) -> dict[str, Any]:
        return {"peak": self.peak, "warmup": self.warmup, "decay": self.decay, "total": int(self.horizon.numpy())}


class TrainingTime:
    """The training time of a run: this session's plus the earlier sessions' (``spent_before``, which
    the checkpoint keeps). Under a time budget (``budget`` seconds), whether it is spent, and the
    step that training is expected to reach when it ends, capped at ``steps``.

    The step rate is measured over this session from the end of its first step (which includes
    tracing); until then it is the earlier sessions' average, if any. Evaluations and checkpoint
    saves are inside the measured time, as they will be in the time left."""

    def __init__(self, budget: float | None, steps: int, step: int, spent_before: float,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.budget, self.steps, self.spent_before, self.clock = budget, steps, spent_before, clock
        self.started, self.start_step = clock(), step
        self.earlier_rate = step / spent_before if step and spent_before > 0 else None
        self._first: tuple[int, float] | None = None  # (step, time) at the end of this session's first step

    def spent(self) -> float:
        return self.spent_before + self.clock() - self.started

    def over(self) -> bool:
        return self.budget is not None and self.spent() >= self.budget

    def horizon(self, step: int) -> int:
        """The step expected when the budget ends (``steps`` without a budget); call it after each step."""
        now = self.clock()
        if self._first is None and step > self.start_step:
            self._first = (step, now)
        rate = self.earlier_rate
        if self._first is not None and step > self._first[0] and now > self._first[1]:
            rate = (step - self._first[0]) / (now - self._first[1])
        if self.budget is None or rate is None:
            return self.steps
        left = max(self.budget - self.spent_before - (now - self.started), 0.0)
        return min(self.steps, step + math.ceil(left * rate))


def token_loss(logits: tf.Tensor, labels: tf.Tensor, label_smoothing: float = 0.0) -> tuple[tf.Tensor, tf.Tensor]:
    """Mean cross-entropy per non-padding target token, and that token count."""
    vocab = tf.shape(logits)[-1]
    nll = _cross_entropy(tf.reshape(tf.cast(logits, tf.float32), [-1, vocab]), tf.reshape(labels, [-1]),
                         label_smoothing)
    return _mean_over_tokens(nll, tf.reshape(labels, [-1]))


def _mean_over_tokens(nll: tf.Tensor, targets: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """The mean of ``nll`` [n] over the non-padding ``targets`` [n], and their count."""
    mask = tf.cast(tf.not_equal(targets, PAD_ID), tf.float32)
    tokens = tf.reduce_sum(mask)
    return tf.reduce_sum(nll * mask) / tf.maximum(tokens, 1.0), tokens


def _cross_entropy(logits: tf.Tensor, labels: tf.Tensor, label_smoothing: float) -> tf.Tensor:
    """Cross-entropy [n] of logits [n, vocab] against labels [n] smoothed by ``label_smoothing``
    (the target: 1 - s on the label plus s / vocab on every token), on TensorFlow's fused kernel.

    The kernel returns the loss and its gradient (softmax - one-hot) in one pass; smoothing adds
    s * (logit of the label - mean logit) to the loss and s * (one-hot - 1 / vocab) to that gradient,
    so the step never builds log-probabilities, their mean or a gather's gradient over the
    vocabulary (bench/README.md, "Where the training step goes").
    """

    @tf.custom_gradient
    def cross_entropy(logits: tf.Tensor) -> tuple[tf.Tensor, Callable]:
        nll, gradient = tf.raw_ops.SparseSoftmaxCrossEntropyWithLogits(features=logits, labels=labels)
        if label_smoothing:
            label_logits = tf.gather(logits, labels, batch_dims=1)
            nll += label_smoothing * (label_logits - tf.reduce_mean(logits, axis=-1))
            vocab = tf.cast(tf.shape(logits)[-1], tf.float32)
            at_labels = tf.stack([tf.range(tf.shape(labels)[0]), labels], axis=1)
            gradient = tf.tensor_scatter_nd_add(gradient - label_smoothing / vocab, at_labels,
                                                tf.fill(tf.shape(labels), label_smoothing))
        return nll, lambda upstream: upstream[:, None] * gradient

    return cross_entropy(logits)


def log_uniform_draw(samples: int, vocab: int, seed: tf.Tensor) -> tf.Tensor:
    """``samples`` ids [samples] drawn with replacement from the log-uniform (Zipf) distribution over
    ``vocab`` ids, P(id) = log((id + 2) / (id + 1)) / log(vocab + 1): a sampled softmax's draw.
    Stateless: ``seed`` (two int32s; the trainer passes the run's seed and the step) fixes it, so a
    resumed run draws what an uninterrupted one would. Drawn outside XLA, whose Philox differs.
    """
    uniform = tf.random.stateless_uniform([samples], seed=seed, alg="philox")  # the same on every device
    ids = tf.cast(tf.exp(uniform * tf.math.log(float(vocab) + 1.0)), tf.int32) - 1
    return tf.clip_by_value(ids, 0, vocab - 1)


def sampled_token_loss(features: tf.Tensor, labels: tf.Tensor, weights: tf.Tensor, bias: tf.Tensor,
                       drawn: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """As :func:`token_loss`, with a sampled softmax (Jean et al. 2015): each target token is scored
    against the ``drawn`` ids [samples] of :func:`log_uniform_draw` instead of the whole vocabulary.

    features [batch, time, units] (the vectors the softmax reads), labels [batch, time], the softmax's
    rows ``weights`` [vocab, units] and ``bias`` [vocab]. A drawn token's logit is corrected by the
    log of its expected count among the draws, a draw equal to the target is masked out, and the
    target's own logit is left as it is (unlike ``tf.nn.sampled_softmax_loss``): the sum over the
    draws is then an importance-sampling estimate of the partition function without the target, and
    the loss converges to the full softmax's as the draws grow.
    """
    units = tf.shape(features)[-1]
    inputs = tf.reshape(tf.cast(features, tf.float32), [-1, units])
    targets = tf.reshape(labels, [-1])
    rows, offsets = tf.cast(weights, tf.float32), tf.cast(bias, tf.float32)
    samples = tf.cast(tf.shape(drawn)[0], tf.float32)
    log_range = tf.math.log(tf.cast(tf.shape(rows)[0], tf.float32) + 1.0)
    ids = tf.cast(drawn, tf.float32)
    log_expected_count = tf.math.log(samples * tf.math.log1p(1.0 / (ids + 1.0)) / log_range)  # log((id+2)/(id+1))
    target_logits = tf.reduce_sum(inputs * tf.gather(rows, targets), axis=-1) + tf.gather(offsets, targets)
    drawn_logits = (tf.matmul(inputs, tf.gather(rows, drawn), transpose_b=True) + tf.gather(offsets, drawn)
                    - log_expected_count)
    drawn_logits = tf.where(tf.equal(targets[:, None], drawn[None, :]), tf.float32.min, drawn_logits)
    nll = tf.reduce_logsumexp(tf.concat([target_logits[:, None], drawn_logits], axis=1), axis=1) - target_logits
    return _mean_over_tokens(nll, targets)


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


class LossWindow:
    """The recent step losses (a ring buffer) and how many were seen, as variables: they are in the
    checkpoint, so train_loss survives a resume."""

    def __init__(self) -> None:
        self.window = tf.Variable(tf.zeros([TRAIN_LOSS_WINDOW]), trainable=False)
        self.count = tf.Variable(0, trainable=False, dtype=tf.int64)

    def trackables(self) -> dict[str, tf.Variable]:
        return {"window": self.window, "count": self.count}

    def add(self, loss: tf.Tensor) -> None:
        """In-graph: record one step's loss."""
        slot = tf.math.floormod(self.count, TRAIN_LOSS_WINDOW)
        self.window.scatter_nd_update([[slot]], [tf.cast(loss, tf.float32)])
        self.count.assign_add(1)

    def mean(self, last: int = TRAIN_LOSS_WINDOW) -> float:
        """The mean of the last ``last`` losses, oldest first (the order of the plain list it
        replaced, so the same sum)."""
        seen = int(self.count)
        kept = min(seen, TRAIN_LOSS_WINDOW, last)
        if not kept:
            return float("nan")
        values = self.window.numpy().astype(np.float64)
        return float(np.mean(values[[(seen - kept + i) % TRAIN_LOSS_WINDOW for i in range(kept)]]))


def gradient_groups(variables: Sequence[tf.Variable]) -> dict[str, list[int]]:
    """The trainable variables grouped by layer, for per-layer gradient norms: group name ->
    indices into ``variables``, in the order the variables come. A group is the layer's path
    below the model (its first one or two components: ``encoder/embedding``, ``encoder/forward_0``,
    ``decoder/rnn_1``, ``attention``, ``bridge``, ``decoder/output_projection``): the model's own
    name (``seq2_seq_2`` for the third model built in a process) is left out, so the names are the
    same in every run of a config."""
    groups: dict[str, list[int]] = {}
    for index, variable in enumerate(variables):
        parts = variable.path.split("/")
        layer = parts[1:-1][:2] or parts[:-1] or ["model"]
        groups.setdefault("/".join(layer), []).append(index)
    return groups


class GradientWindow:
    """Gradient statistics of the steps since the last :meth:`reset`, as variables updated in the
    compiled step (in the checkpoint, so a resumed run reports what an uninterrupted one would):
    the steps, the sum and maximum of the global gradient norm before clipping, the steps that
    were clipped (norm > clip_norm) and the sum of each layer group's norm. A step with a
    non-finite norm (skipped by float16 loss scaling; in float32 training stops) is left out."""

    def __init__(self, groups: int) -> None:
        self.steps = tf.Variable(0, trainable=False, dtype=tf.int64)
        self.clipped = tf.Variable(0, trainable=False, dtype=tf.int64)
        self.norm_sum = tf.Variable(0.0, trainable=False, dtype=tf.float64)
        self.norm_max = tf.Variable(0.0, trainable=False, dtype=tf.float64)
        self.layer_sums = tf.Variable(tf.zeros([groups], tf.float64), trainable=False)

    def trackables(self) -> dict[str, tf.Variable]:
        return {"steps": self.steps, "clipped": self.clipped, "norm_sum": self.norm_sum, "norm_max": self.norm_max,
                "layer_sums": self.layer_sums}

    def add(self, norm: tf.Tensor, layer_norms: tf.Tensor, clip_norm: float) -> None:
        """In-graph: record one step's global norm (before clipping) and its groups' norms."""
        finite = tf.math.is_finite(norm)
        norm64 = tf.where(finite, tf.cast(norm, tf.float64), tf.constant(0.0, tf.float64))
        self.steps.assign_add(tf.cast(finite, tf.int64))
        self.clipped.assign_add(tf.cast(tf.logical_and(finite, norm > clip_norm), tf.int64))
        self.norm_sum.assign_add(norm64)
        self.norm_max.assign(tf.maximum(self.norm_max, norm64))
        self.layer_sums.assign_add(tf.where(finite, tf.cast(layer_norms, tf.float64), tf.zeros_like(self.layer_sums)))

    def reset(self) -> None:
        for variable in self.trackables().values():
            variable.assign(tf.zeros_like(variable))

    def summary(self, names: Sequence[str]) -> dict[str, Any]:
        """{"gradient_norm": mean, "gradient_norm_max", "clipped_fraction", "layer_gradient_norms":
        {group: mean}} over the recorded steps; {} when there were none."""
        steps = int(self.steps)
        if not steps:
            return {}
        layers = self.layer_sums.numpy() / steps
        return {"gradient_norm": float(self.norm_sum) / steps, "gradient_norm_max": float(self.norm_max),
                "clipped_fraction": int(self.clipped) / steps,
                "layer_gradient_norms": {name: float(value) for name, value in zip(names, layers)}}


def make_train_step(strategy: tf.distribute.Strategy, model: keras.Model, optimizer: keras.optimizers.Optimizer,
                    cfg: TrainConfig, carried: Any, losses: LossWindow,
                    windows: Sequence[GradientWindow] = (), seed: int = 0) -> Any:
    """The compiled step: batch -> (loss, gradient norm before clipping, target tokens, the norm
    of each group of :func:`gradient_groups` before clipping, in its order). With ``carried``
    state variables (TBPTT), the state at the end of a batch starts the next. Each of
    ``windows`` records the step's gradient norms. ``seed`` and the step seed the sampled
    softmax's draws (``cfg.sampled_softmax``)."""
    replicas = strategy.num_replicas_in_sync
    groups = list(gradient_groups(model.trainable_variables).values())
    running_text = bool(tf.nest.flatten(carried))
    loss_scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)

    @tf.function(jit_compile=cfg.jit_compile, reduce_retracing=True, autograph=False)
    def gradients_of(batch: dict[str, tf.Tensor], state: Any,
                     drawn: tf.Tensor) -> tuple[list, tf.Tensor, tf.Tensor, Any]:
        """Forward and backward on this replica's rows: gradients of the mean loss over its
        tokens (times the loss scale under float16), that loss, the token count, final state.
        Under XLA the recurrences trace on the loop path: cuDNN's ops do not compile."""
        loop_only = forced_recurrence_path("loop") if cfg.jit_compile else contextlib.nullcontext()
        project = cfg.sampled_softmax is None
        with loop_only, tf.GradientTape() as tape:
            if running_text:
                outputs, final = model.forward(batch["target_in"], state, training=True, project=project)
            else:
                outputs, final = model(batch, training=True, project=project), state
            if project:
                loss, tokens = token_loss(outputs, batch["target_out"], cfg.label_smoothing)
            else:
                loss, tokens = sampled_token_loss(outputs, batch["target_out"], *model.decoder.output_weights(),
                                                  drawn)
            scaled = optimizer.scale_loss(loss) if loss_scaled else loss
        return tape.gradient(scaled, model.trainable_variables), loss, tokens, final

    def replica_step(batch: dict[str, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
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
        drawn = tf.zeros([0], tf.int32)
        if cfg.sampled_softmax is not None:
            # (Under float16, a step the loss scale skips does not advance the step: the next batch
            # draws the same ids.)
            step_seed = tf.stack([tf.constant(seed % 2**31, tf.int32), tf.cast(optimizer.iterations, tf.int32)])
            drawn = log_uniform_draw(cfg.sampled_softmax, model.decoder.vocab_size, step_seed)
        gradients, loss, tokens, final = gradients_of(batch, state, drawn)
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
        # Clipped after the sum, as one device would: every replica holds the same gradients. The
        # norms of those gradients, as clipping sees them: each variable's half squared norm once,
        # summed per layer group and in all (the global norm computed exactly as
        # tf.clip_by_global_norm computes it itself, so the update is the same bits).
        half_squares = [tf.nn.l2_loss(g) for g in gradients]
        norm = tf.sqrt(tf.reduce_sum(tf.stack(half_squares)) * 2.0)
        layer_norms = tf.stack([tf.sqrt(tf.reduce_sum(tf.stack([half_squares[i] for i in group])) * 2.0)
                                for group in groups])
        gradients, _ = tf.clip_by_global_norm(gradients, cfg.clip_norm, use_norm=norm)
        if loss_scaled:
            gradients = [g * optimizer.dynamic_scale for g in gradients]
        # The optimizer sums over replicas again: hand it 1/N of the (identical) gradients.
        optimizer.apply_gradients(zip([g / replicas for g in gradients] if replicas > 1 else gradients,
                                      model.trainable_variables))
        if running_text:
            tf.nest.map_structure(lambda v, f: v.assign(tf.cast(tf.stop_gradient(f), tf.float32)), carried, final)
        return loss, norm, tokens, layer_norms

    @tf.function(autograph=False, input_signature=[STREAM_BATCH_SPEC if running_text else BATCH_SPEC])
    def train_step(batch: dict[str, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
        results = strategy.run(replica_step, args=(batch,))
        loss, norm, tokens, layer_norms = (strategy.experimental_local_results(r)[0] for r in results)
        losses.add(loss)
        for window in windows:
            window.add(norm, layer_norms, cfg.clip_norm)
        return loss, norm, tokens, layer_norms

    return train_step


def make_eval_loss(model: keras.Model) -> Any:
    """Compiled: batch -> (mean loss per target token, target tokens), without dropout."""

    @tf.function(autograph=False, input_signature=[BATCH_SPEC])
    def eval_loss(batch: dict[str, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
        return token_loss(model(batch, training=False), batch["target_out"])

    return eval_loss


def make_dev_loss(model: keras.Model, dev: EncodedCorpus) -> Callable[[], float]:
    """The loss per target token of the whole encoded dev set with the model's current weights,
    without dropout (its batches are built at the first call, once)."""
    eval_loss = make_eval_loss(model)
    batches: list[tf.data.Dataset] = []

    def dev_loss() -> float:
        if not batches:
            batches.append(make_dataset(dev, batch_size=64, repeat=False, shuffle=False))
        total, tokens = 0.0, 0.0
        for batch in batches[0]:
            loss, count = eval_loss(batch)
            total += float(loss) * float(count)
            tokens += float(count)
        return total / max(tokens, 1.0)

    return dev_loss
