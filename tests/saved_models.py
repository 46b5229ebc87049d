"""SavedModels that TF Serving serves and nmt did not export, built here with TensorFlow itself
where TF Serving's own test models (tests/data/tfserving) have no such thing: a TF1 linear graph
whose coefficients a test chooses, with predict, classify and regress signatures on one model; a
TF2 module with several named inputs and outputs of many dtypes; one that takes and returns binary
strings; one that answers when the test lets it."""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf

v1 = tf.compat.v1


def linear(path: Path, a: float = 0.5, b: float = 3.0) -> Path:
    """A TF1 session SavedModel shaped like TF Serving's half_plus_three, y = a*x + b, with the
    classify signature that one lacks and coefficients of the test's choosing. Signatures:
    serving_default (predict: x -> y), tensorflow/serving/regress (Examples with feature x -> y)
    and tensorflow/serving/classify (Examples -> classes ["low", "high"], scores [-y, y])."""
    graph = tf.Graph()
    with graph.as_default():
        x = v1.placeholder(tf.float32, [None], name="x")
        serialized = v1.placeholder(tf.string, [None], name="tf_example")
        parsed = tf.io.parse_example(serialized, {"x": tf.io.FixedLenFeature([1], tf.float32)})
        weight, bias = v1.Variable(a, name="a"), v1.Variable(b, name="b")
        y = tf.add(weight * x, bias, name="y")
        y_examples = weight * parsed["x"] + bias  # [batch, 1]
        classes = tf.tile(tf.constant([["low", "high"]]), [tf.shape(y_examples)[0], 1])
        scores = tf.concat([-y_examples, y_examples], axis=1)
        signatures = {
            "serving_default": v1.saved_model.predict_signature_def({"x": x}, {"y": y}),
            "tensorflow/serving/regress": v1.saved_model.regression_signature_def(serialized, y_examples),
            "tensorflow/serving/classify": v1.saved_model.classification_signature_def(serialized, classes, scores),
        }
        with v1.Session(graph=graph) as session:
            session.run(v1.global_variables_initializer())
            builder = v1.saved_model.Builder(str(path))
            builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map=signatures)
            builder.save()
    return path


class _Mixed(tf.Module):
    @tf.function(input_signature=[
        tf.TensorSpec([None], tf.string, name="tag"),
        tf.TensorSpec([None, 3], tf.float64, name="signal"),
        tf.TensorSpec([None], tf.int64, name="count"),
        tf.TensorSpec([None], tf.bool, name="flag"),
        tf.TensorSpec([None], tf.uint8, name="small"),
        tf.TensorSpec([None], tf.float16, name="half"),
    ])
    def call(self, tag, signal, count, flag, small, half):
        return {
            "tag_length": tf.strings.length(tag, unit="UTF8_CHAR"),
            "total": tf.reduce_sum(signal, axis=1) * tf.cast(count, tf.float64),
            "flipped": tf.logical_not(flag),
            "small_plus_one": small + 1,
            "half_doubled": half * 2,
            "upper": tf.strings.upper(tag),
        }


def mixed(path: Path) -> Path:
    """A TF2 module: six named inputs of six dtypes, six named outputs (serving_default)."""
    module = _Mixed()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.call})
    return path


class _Binary(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    def call(self, image_bytes):
        return {"size": tf.strings.length(image_bytes), "reversed_bytes": tf.strings.reduce_join(
            tf.reverse(tf.strings.bytes_split(image_bytes).to_tensor(), axis=[1]), axis=1)}


def binary(path: Path) -> Path:
    """Binary strings in (``image_bytes``) and out (``reversed_bytes``: each input's bytes reversed)."""
    module = _Binary()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.call})
    return path


class _Gated(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="gate")])
    def call(self, gate):
        # Loops until a file matches the first row's path: the test opens the gate when it chooses.
        (polls,) = tf.while_loop(lambda i: tf.equal(tf.size(tf.io.matching_files(gate[0])), 0),
                                 lambda i: (i + 1,), (tf.constant(0),))
        return {"polls": tf.fill(tf.shape(gate), polls)}


def gated(path: Path) -> Path:
    """A model whose call returns once a file matching its ``gate`` input exists: as slow as the
    test wants, whatever the machine's speed (``polls``: how often it looked)."""
    module = _Gated()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.call})
    return path
