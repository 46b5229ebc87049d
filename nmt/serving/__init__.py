"""``nmt serve``: TensorFlow Serving's REST API over exported SavedModels, on a laptop, no Docker.

It reads the same ``models.config`` as ``tensorflow_model_server`` (a ``ModelServerConfig`` text
proto: names, base paths, version policies) and answers the same calls with the same JSON and
status codes, so a client written against one works against the other; what it answers is listed
once, in :data:`nmt.serving.config.SERVED` (``nmt serve --help`` and ``/docs`` print it).

Concurrent requests for one signature are batched: calls wait up to ``max_wait_ms`` for others and
run as one batch of at most ``max_batch_size`` rows, one model call at a time per model version
(TensorFlow uses every core for a call), so throughput grows with load.

Modules, one concern each:

- :mod:`~nmt.serving.config`: ``models.config``, the versions to serve, batching and monitoring
  files, :class:`Limits`
- :mod:`~nmt.serving.saved_model`: a SavedModel in a session, as TF Serving loads it, and its warm-up replay
- :mod:`~nmt.serving.registry`: loaded model versions (:class:`Servable`), :class:`ModelRegistry`
  (version policies and labels, polling, status)
- :mod:`~nmt.serving.batching`: :class:`Batcher`, concurrent calls merged into model calls
- :mod:`~nmt.serving.rest_codec`: TF Serving's JSON request and response formats
- :mod:`~nmt.serving.tf_examples`: ``tf.train.Example`` requests of classify and regress, and their results
- :mod:`~nmt.serving.errors`: :class:`RequestError`, graph errors, the HTTP status <-> gRPC code table
- :mod:`~nmt.serving.calls`: :class:`Calls`, the one call path of every API: resolve, signature,
  limits, deadline, batch, metrics, typed errors
- :mod:`~nmt.serving.tfserving_api`: the ``/v1/models/...`` router
- :mod:`~nmt.serving.grpc_api`: ``PredictionService`` and ``ModelService`` over gRPC
- :mod:`~nmt.serving.metrics`: request counts and latencies under TF Serving's metric names
- :mod:`~nmt.serving.task_api`: the ``/v1/translate``, ``/v1/score``, ``/v1/next-word``, ``/v1/suggest``,
  ``/v1/generate``, ``/v1/inspect`` router and its request models
- :mod:`~nmt.serving.http_guard`: the HTTP edge (body limits and parsing, Host/Origin, CORS, timeouts)
- :mod:`~nmt.serving.app`: :func:`create_app`, and :func:`start` of a server's
  :class:`~nmt.serving.config.ServerSettings` (REST and gRPC on one event loop, the pollers)

The command lines that build those settings are :mod:`nmt.cli.serve` (``nmt serve``) and
:mod:`nmt.cli.model_server` (``nmt-model-server``, ``tensorflow_model_server``'s flags).
Importing this package (or ``config``) loads neither TensorFlow nor FastAPI: the CLI checks its
arguments first. The other names load their module on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from nmt.serving.config import Access, Limits, ModelEntry, ServerSettings, read_model_config, versions_to_serve
from nmt.serving.errors import RequestError, graph_error_summary

# name -> the module that defines it, imported when the name is first used (PEP 562).
_LAZY = {
    "create_app": "app", "start": "app", "RunningServer": "app",
    "Calls": "calls", "Target": "calls",
    "Servable": "registry", "ModelRegistry": "registry",
    "Batcher": "batching",
    "parse_predict_body": "rest_codec", "format_predictions": "rest_codec",
    "AccessGuard": "http_guard", "parse_json_body": "http_guard",
}

__all__ = ["Access", "Limits", "ModelEntry", "ServerSettings", "read_model_config", "versions_to_serve",
           "RequestError", "graph_error_summary", *_LAZY]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    globals()[name] = value  # once is enough
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
