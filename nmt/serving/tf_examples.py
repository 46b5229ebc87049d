"""TF Serving's Classify and Regress: requests made of ``tf.train.Example``s (from REST's
``"examples"`` and ``"context"`` JSON or gRPC's ``Input`` proto) run through a classification or
regression signature, whose one input takes the serialized Examples, and its outputs read back as
TF Serving answers them (labels and scores; one value per example)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from nmt.serving.config import Limits
from nmt.serving.errors import RequestError
from nmt.serving.rest_codec import is_b64, string_bytes

# Method names and the tensor keys of their signatures (tensorflow/python/saved_model/signature_constants.py).
PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
EXAMPLES_INPUT = "inputs"
CLASSES, SCORES = "classes", "scores"
REGRESSION_OUTPUT = "outputs"


def check_method(signature: str, method: str, wanted: str) -> None:
    """TF Serving's refusal to classify with a regression signature (and so on)."""
    if method != wanted:
        raise RequestError(f"Expected {wanted.rsplit('/', 1)[-1]} signature method_name to be {wanted}. "
                           f"Was: {method} (signature {signature!r})")


def _feature(values: Any, name: str) -> Any:
    """A JSON feature value (a number, a string, {"b64": ...}, or a list of one kind) -> a Feature."""
    import tensorflow as tf

    items = values if isinstance(values, list) else [values]
    if not items:
        raise RequestError(f"feature {name}: an empty list has no type; leave the feature out instead")
    if all(isinstance(v, bool) for v in items) or any(isinstance(v, (list, dict)) and not is_b64(v) for v in items):
        raise RequestError(f"feature {name}: expected numbers, strings or {{\"b64\": ...}} (or a list of one kind)")
    if all(isinstance(v, int) and not isinstance(v, bool) for v in items):
        if any(not -(2**63) <= v < 2**63 for v in items):
            raise RequestError(f"feature {name}: integers out of the int64 range")
        return tf.train.Feature(int64_list=tf.train.Int64List(value=items))
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in items):
        if any(math.isfinite(v) and abs(v) > np.finfo(np.float32).max for v in items):
            raise RequestError(f"feature {name}: numbers outside the float32 range")
        return tf.train.Feature(float_list=tf.train.FloatList(value=[float(v) for v in items]))
    if all(isinstance(v, str) or is_b64(v) for v in items):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[_bytes(v, name) for v in items]))
    raise RequestError(f"feature {name}: a list must hold one kind of value (numbers or strings)")


def _bytes(value: Any, name: str) -> bytes:
    try:
        return string_bytes(value)
    except ValueError as error:
        raise RequestError(f"feature {name}: {error}") from None


def _example(features: Any, where: str) -> Any:
    import tensorflow as tf

    if not isinstance(features, dict):
        raise RequestError(f"{where} must be an object of features")
    return tf.train.Example(features=tf.train.Features(
        feature={name: _feature(value, name) for name, value in features.items()}))


def examples_from_json(body: Any, limits: Limits) -> list[bytes]:
    """A REST :classify / :regress body -> serialized Examples, the context's features in each
    (TF Serving prepends the serialized context to every example; parsing merges them alike).
    The row limit is checked before anything is serialized, and the copies of the context too."""
    if not isinstance(body, dict) or "examples" not in body:
        raise RequestError("JSON object must have \"examples\": a list of objects of features")
    examples = body["examples"]
    if not isinstance(examples, list) or not examples:
        raise RequestError("\"examples\" must be a non-empty list of objects of features")
    limits.check_rows(len(examples))
    unknown = set(body) - {"examples", "context", "signature_name"}
    if unknown:
        raise RequestError(f"unknown key(s) {', '.join(sorted(unknown))}; expected signature_name, context, examples")
    context = body.get("context", {})
    prefix = _example(context, "\"context\"").SerializeToString() if context else b""
    if context and isinstance(context, dict):
        for i, example in enumerate(examples):
            shared = set(context) & set(example) if isinstance(example, dict) else set()
            if shared:
                raise RequestError(f"example {i}: feature(s) {', '.join(sorted(shared))} also in \"context\"; "
                                   "a feature is in one or the other")
    check_context_copies(len(prefix), len(examples), limits)
    return [prefix + _example(e, f"example {i}").SerializeToString() for i, e in enumerate(examples)]


def check_context_copies(context_bytes: int, rows: int, limits: Limits) -> None:
    """Each example gets its own copy of the context: those copies, too, within what a request may carry."""
    if context_bytes * rows > limits.max_message_bytes:
        raise RequestError(f"the context ({context_bytes} bytes) copied into each of {rows} examples comes to "
                           f"{context_bytes * rows} bytes, over the {limits.max_message_bytes} a request may carry")


def examples_from_input(message: Any, limits: Limits) -> list[bytes]:
    """A gRPC ``tensorflow.serving.Input`` -> serialized Examples (context prepended likewise),
    the row limit checked before anything is serialized."""
    kind = message.WhichOneof("kind")
    if kind == "example_list":
        limits.check_rows(len(message.example_list.examples))
        serialized = [e.SerializeToString() for e in message.example_list.examples]
    elif kind == "example_list_with_context":
        listed = message.example_list_with_context
        limits.check_rows(len(listed.examples))
        prefix = listed.context.SerializeToString()
        check_context_copies(len(prefix), len(listed.examples), limits)
        serialized = [prefix + e.SerializeToString() for e in listed.examples]
    else:
        serialized = []
    if not serialized:
        raise RequestError("Input is empty.")
    return serialized


def classifications(outputs: dict[str, np.ndarray], rows: int) -> list[list[tuple[str, float]]]:
    """A classify signature's ``classes`` [rows, n] and/or ``scores`` [rows, n] -> per example,
    (label, score) pairs; a missing label is "" and a missing score 0, as TF Serving fills them."""
    classes, scores = outputs.get(CLASSES), outputs.get(SCORES)
    if classes is None and scores is None:
        raise RequestError(f"classification signature has neither {CLASSES!r} nor {SCORES!r} outputs", 500)
    width = (classes if classes is not None else scores).reshape(rows, -1).shape[1]
    labels = classes.reshape(rows, width) if classes is not None else np.full((rows, width), b"", dtype=object)
    values = scores.reshape(rows, width).astype(np.float64) if scores is not None else np.zeros((rows, width))
    return [[(label.decode("utf-8", "replace"), float(score)) for label, score in zip(row_labels, row_scores)]
            for row_labels, row_scores in zip(labels, values)]


def regressions(outputs: dict[str, np.ndarray], rows: int) -> list[float]:
    """A regress signature's ``outputs`` [rows] or [rows, 1] -> one value per example."""
    if REGRESSION_OUTPUT not in outputs:
        raise RequestError(f"regression signature has no {REGRESSION_OUTPUT!r} output", 500)
    values = outputs[REGRESSION_OUTPUT]
    if values.size != rows:
        raise RequestError(f"regression output has {values.size} values for {rows} examples; expected one each", 500)
    return [float(v) for v in values.reshape(rows)]
