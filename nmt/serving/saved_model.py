"""A SavedModel loaded as TF Serving loads it: into a session, by the serving meta graph's tensor
names, whatever TensorFlow wrote it (TF1 graphs with ref variables, TF2 functions alike).

Each signature runs as one session callable over its input and output tensors: the request's
arrays are fed as they are, and shapes are the graph's to judge (a SignatureDef's shape is a
declaration, not a check: TF Serving's README feeds rank-1 ``x`` to a ``[-1, 1]`` signature).
The session keeps the variables, so a stateful signature (TF Serving's counter model) counts
across calls. ``assets.extra/tf_serving_warmup_requests`` is replayed on load, as TF Serving does
before it reports the version AVAILABLE."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from nmt.serving.config import Limits
from nmt.signatures import WARMUP_FILE

log = logging.getLogger(__name__)

SERVE_TAG = "serve"
MAX_WARMUP_RECORDS = 1000  # TF Serving's limit on one warm-up file
# The model's own warm-up file is not a client's request: no row limit, 1 GiB per record.
WARMUP_LIMITS = Limits(max_request_rows=1 << 30, max_body_bytes=1 << 30)
Arrays = dict[str, np.ndarray]


class SessionModel:
    """One SavedModel in its own graph and session: its SignatureDefs (internal ones such as
    ``__saved_model_init_op`` left out), their inputs as TensorSpecs, and :meth:`run`."""

    def __init__(self, path: Path) -> None:
        import tensorflow as tf
        import tensorflow_text  # noqa: F401 - registers the SentencePiece ops nmt's graphs use

        self.path = Path(path)
        self.graph = tf.Graph()
        # Soft placement: a model exported on a GPU machine still loads where there is none.
        config = tf.compat.v1.ConfigProto(allow_soft_placement=True)
        self.session = tf.compat.v1.Session(graph=self.graph, config=config)
        from tensorflow.python.util import deprecation

        # The session loader is TF Serving's way, not a deprecated one here: no "use load" notice.
        with self.graph.as_default(), deprecation.silence():
            meta_graph = tf.compat.v1.saved_model.loader.load(self.session, [SERVE_TAG], str(self.path))
        self.signature_defs = {key: value for key, value in meta_graph.signature_def.items()
                               if not key.startswith("__")}
        self._specs = {key: {name: tf.TensorSpec(tf.TensorShape(info.tensor_shape), tf.as_dtype(info.dtype), name)
                             for name, info in value.inputs.items()}
                       for key, value in self.signature_defs.items()}
        self._callables: dict[str, tuple[list[str], list[str], Any]] = {}
        self._lock = threading.Lock()

    def input_specs(self, key: str) -> dict[str, Any]:
        """The signature's inputs by name, as declared (dtype and shape, possibly of unknown rank)."""
        return self._specs[key]

    def method(self, key: str) -> str:
        return self.signature_defs[key].method_name

    def _callable(self, key: str) -> tuple[list[str], list[str], Any]:
        with self._lock:
            if key not in self._callables:
                from tensorflow.core.protobuf import config_pb2

                signature = self.signature_defs[key]
                inputs, outputs = sorted(signature.inputs), sorted(signature.outputs)
                options = config_pb2.CallableOptions(feed=[signature.inputs[n].name for n in inputs],
                                                     fetch=[signature.outputs[n].name for n in outputs])
                # The C++ callable feeds the arrays as they are (Python's Session.run would refuse
                # a shape the placeholder does not declare, which TF Serving does not).
                self._callables[key] = (inputs, outputs, self.session._make_callable_from_options(options))
            return self._callables[key]

    def run(self, key: str, inputs: Arrays) -> Arrays:
        """The signature's outputs for ``inputs`` (named as the signature names them, every one
        given, of the declared dtypes: the caller checks). The graph's own errors propagate as
        ``tf.errors.OpError``."""
        names, outputs, call = self._callable(key)
        values = call(*[inputs[name] for name in names])
        return {name: np.asarray(value) for name, value in zip(outputs, values)}


def replay_warmup(model: SessionModel, run_examples: Any) -> int:
    """Replays ``assets.extra/tf_serving_warmup_requests`` (a TFRecord file of PredictionLogs),
    as TF Serving does on load: Predict, Classify, Regress and MultiInference logs, each run once.
    ``run_examples(signature, method, serialized)`` runs an examples call. Returns how many were
    replayed; a record that fails fails the load (TF Serving's rule), naming the record."""
    path = model.path / WARMUP_FILE
    if not path.is_file():
        return 0
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    from nmt.serving import tf_examples

    started, count = time.perf_counter(), 0
    for count, record in enumerate(tf.data.TFRecordDataset(str(path)).as_numpy_iterator(), start=1):
        if count > MAX_WARMUP_RECORDS:
            raise ValueError(f"{path}: more than {MAX_WARMUP_RECORDS} warm-up records")
        entry = prediction_log_pb2.PredictionLog.FromString(record)
        kind = entry.WhichOneof("log_type")
        try:
            if kind == "predict_log":
                request = entry.predict_log.request
                inputs = {name: tf.make_ndarray(proto) for name, proto in request.inputs.items()}
                model.run(request.model_spec.signature_name or "serving_default", inputs)
            elif kind in ("classify_log", "regress_log"):
                request = getattr(entry, kind).request
                method = tf_examples.CLASSIFY_METHOD if kind == "classify_log" else tf_examples.REGRESS_METHOD
                run_examples(request.model_spec.signature_name or "serving_default", method,
                             tf_examples.examples_from_input(request.input, WARMUP_LIMITS))
            elif kind == "multi_inference_log":
                request = entry.multi_inference_log.request
                serialized = tf_examples.examples_from_input(request.input, WARMUP_LIMITS)
                for task in request.tasks:
                    run_examples(task.model_spec.signature_name or "serving_default", task.method_name, serialized)
            else:
                raise ValueError(f"unsupported log type {kind}")
        except Exception as error:
            raise ValueError(f"{path}: warm-up record {count} ({kind}) failed: "
                             f"{type(error).__name__}: {error}".splitlines()[0]) from None
    log.info("%s: replayed %d warm-up request(s) in %.2f s", model.path, count, time.perf_counter() - started)
    return count
