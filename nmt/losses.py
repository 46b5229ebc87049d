"""The training losses: the mean cross-entropy per target token (label smoothing folded into a
fused kernel's gradient) and its sampled-softmax form for large vocabularies."""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from nmt.constants import PAD_ID


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
