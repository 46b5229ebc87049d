"""One training step, for any number of replicas: the loss, its gradients, clipping and the
update, compiled once, feeding the gradient statistics (:mod:`nmt.train_stats`); the dev loss.
The losses are :mod:`nmt.losses`', the learning-rate schedule :mod:`nmt.schedule`'s."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import keras
import tensorflow as tf

from nmt.config import TrainConfig
from nmt.layers.recurrent import forced_recurrence_path
from nmt.losses import log_uniform_draw, sampled_token_loss, token_loss
from nmt.pipeline import EncodedCorpus, make_dataset
from nmt.train_stats import GradientWindow, LossWindow, gradient_groups

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
