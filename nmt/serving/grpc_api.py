"""TF Serving's gRPC API (its port 8500): ``PredictionService`` (Predict, Classify, Regress,
GetModelMetadata, MultiInference) and ``ModelService`` (GetModelStatus, HandleReloadConfigRequest),
with the messages and stubs of ``tensorflow-serving-api``, so a client of ``tensorflow_model_server``
works unchanged. It runs on the event loop of the REST server and asks the same
:class:`~nmt.serving.registry.ModelRegistry`: concurrent requests of both APIs share batches.
Errors are TF Serving's status codes (NOT_FOUND for an unknown model or version, INVALID_ARGUMENT
for a bad signature or input, ...)."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from nmt import signatures
from nmt.errors import NmtError
from nmt.serving import examples
from nmt.serving.batching import within_deadline
from nmt.serving.config import entries_of
from nmt.serving.http_guard import RequestError
from nmt.serving.metrics import Metrics, code_name
from nmt.serving.registry import ModelRegistry, Servable
from nmt.serving.rest_codec import check_request_size

log = logging.getLogger(__name__)
SIGNATURE_DEF = "signature_def"  # the one metadata field TF Serving answers


def _resolve(registry: ModelRegistry, spec: Any) -> Servable:
    choice = spec.WhichOneof("version_choice")
    version = spec.version.value if choice == "version" else None
    label = spec.version_label if choice == "version_label" else None
    return registry.resolve(spec.name, version, label)


def _spec_of(servable: Servable, signature: str, target: Any) -> None:
    target.name = servable.name
    target.version.value = servable.version
    target.signature_name = signature


def _rpc(api: str, count_examples: bool = False) -> Callable:
    """A servicer method's errors as gRPC status codes (RequestError's HTTP status mapped), and its
    request counted and timed under TF Serving's metric names."""

    def wrap(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        @functools.wraps(method)
        async def call(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
            started, status = time.perf_counter(), 200
            try:
                return await method(self, request, context)
            except RequestError as error:
                status = error.status
                await context.abort(getattr(grpc.StatusCode, code_name(status), grpc.StatusCode.UNKNOWN),
                                    error.message)
            except NmtError as error:
                status = 400
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
            except (asyncio.CancelledError, grpc.aio.AbortError):
                raise
            except Exception as error:  # noqa: BLE001 - the client gets a status, the log the trace
                status = 500
                log.exception("%s failed", api)
                await context.abort(grpc.StatusCode.INTERNAL, f"{type(error).__name__}: {error}")
            finally:
                spec = getattr(request, "model_spec", None)
                if spec is not None:
                    examples_count = _example_count(request) if count_examples and status == 200 else 0
                    self.metrics.record(spec.name, api, "GRPC", code_name(status), time.perf_counter() - started,
                                        examples_count)

        return call

    return wrap


def _example_count(request: Any) -> int:
    """How many Examples a request's Input holds (counted, not serialized again)."""
    kind = request.input.WhichOneof("kind")
    return len(getattr(request.input, kind).examples) if kind else 0


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, registry: ModelRegistry, metrics: Metrics) -> None:
        self.registry, self.metrics = registry, metrics

    @_rpc("Predict")
    async def Predict(self, request: Any, context: Any) -> Any:  # noqa: N802 - the RPC's name
        import tensorflow as tf

        servable = _resolve(self.registry, request.model_spec)
        signature = request.model_spec.signature_name or signatures.SERVING_DEFAULT
        servable.check_signature(signature)
        try:
            arrays = {name: tf.make_ndarray(proto) for name, proto in request.inputs.items()}
        except (TypeError, ValueError) as error:
            raise RequestError(f"input tensors: {error}") from None
        check_request_size(arrays, self.registry.limits)
        outputs = await within_deadline(servable.predict(signature, arrays), self.registry.limits.request_timeout_s)
        wanted = list(request.output_filter) or list(outputs)
        unknown = [name for name in wanted if name not in outputs]
        if unknown:
            raise RequestError(f"output tensor alias not found in signature: {', '.join(unknown)} "
                               f"(outputs: {', '.join(sorted(outputs))})")
        response = predict_pb2.PredictResponse()
        _spec_of(servable, signature, response.model_spec)
        for name in wanted:
            response.outputs[name].CopyFrom(tf.make_tensor_proto(np.asarray(outputs[name])))
        return response

    async def _examples_call(self, request: Any, method: str) -> tuple[Servable, str, Any]:
        servable = _resolve(self.registry, request.model_spec)
        signature = request.model_spec.signature_name or signatures.SERVING_DEFAULT
        serialized = examples.examples_from_input(request.input)
        if len(serialized) > self.registry.limits.max_request_rows:
            raise RequestError(f"{len(serialized)} examples is over the limit of "
                               f"{self.registry.limits.max_request_rows} per request")
        call = servable.classify if method == examples.CLASSIFY_METHOD else servable.regress
        return servable, signature, await within_deadline(call(signature, serialized),
                                                          self.registry.limits.request_timeout_s)

    @_rpc("Classify", count_examples=True)
    async def Classify(self, request: Any, context: Any) -> Any:  # noqa: N802
        servable, signature, results = await self._examples_call(request, examples.CLASSIFY_METHOD)
        response = classification_pb2.ClassificationResponse()
        _spec_of(servable, signature, response.model_spec)
        _fill_classifications(response.result, results)
        return response

    @_rpc("Regress", count_examples=True)
    async def Regress(self, request: Any, context: Any) -> Any:  # noqa: N802
        servable, signature, results = await self._examples_call(request, examples.REGRESS_METHOD)
        response = regression_pb2.RegressionResponse()
        _spec_of(servable, signature, response.model_spec)
        response.result.regressions.extend(regression_pb2.Regression(value=v) for v in results)
        return response

    @_rpc("MultiInference", count_examples=True)
    async def MultiInference(self, request: Any, context: Any) -> Any:  # noqa: N802
        if not request.tasks:
            raise RequestError("MultiInferenceRequest has no tasks")
        serialized = examples.examples_from_input(request.input)
        response = inference_pb2.MultiInferenceResponse()
        for task in request.tasks:
            servable = _resolve(self.registry, task.model_spec)
            signature = task.model_spec.signature_name or signatures.SERVING_DEFAULT
            result = response.results.add()
            _spec_of(servable, signature, result.model_spec)
            if task.method_name == examples.CLASSIFY_METHOD:
                _fill_classifications(result.classification_result, await within_deadline(
                    servable.classify(signature, serialized), self.registry.limits.request_timeout_s))
            elif task.method_name == examples.REGRESS_METHOD:
                values = await within_deadline(servable.regress(signature, serialized),
                                               self.registry.limits.request_timeout_s)
                result.regression_result.regressions.extend(regression_pb2.Regression(value=v) for v in values)
            else:
                raise RequestError(f"Unsupported signature method_name: {task.method_name!r} (MultiInference "
                                   f"runs {examples.CLASSIFY_METHOD} and {examples.REGRESS_METHOD})")
        return response

    @_rpc("GetModelMetadata")
    async def GetModelMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
        fields = list(request.metadata_field)
        if fields != [SIGNATURE_DEF]:
            raise RequestError(f"Metadata field(s) {', '.join(fields) or '(none)'} not supported; "
                               f"ask for {SIGNATURE_DEF!r}")
        servable = _resolve(self.registry, request.model_spec)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        _spec_of(servable, "", response.model_spec)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for key, value in servable.signatures.items():
            signature_map.signature_def[key].CopyFrom(value)
        response.metadata[SIGNATURE_DEF].Pack(signature_map)
        return response


def _fill_classifications(target: Any, results: list[list[tuple[str, float]]]) -> None:
    for row in results:
        classifications = target.classifications.add()
        classifications.classes.extend(classification_pb2.Class(label=label, score=score) for label, score in row)


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, registry: ModelRegistry, metrics: Metrics, config_folder: Path) -> None:
        self.registry, self.metrics, self.config_folder = registry, metrics, config_folder

    @_rpc("GetModelStatus")
    async def GetModelStatus(self, request: Any, context: Any) -> Any:  # noqa: N802
        spec = request.model_spec
        choice = spec.WhichOneof("version_choice")
        states = self.registry.status(spec.name, spec.version.value if choice == "version" else None,
                                      spec.version_label if choice == "version_label" else None)
        response = get_model_status_pb2.GetModelStatusResponse()
        enum = get_model_status_pb2.ModelVersionStatus.State
        for state in states:
            status = response.model_version_status.add(version=int(state["version"]), state=enum.Value(state["state"]))
            status.status.error_code = getattr(grpc.StatusCode, state["status"]["error_code"]).value[0]
            status.status.error_message = state["status"]["error_message"]
        return response

    @_rpc("HandleReloadConfigRequest")
    async def HandleReloadConfigRequest(self, request: Any, context: Any) -> Any:  # noqa: N802
        """Serves the models of the request's ModelServerConfig from now on (loading in a thread)."""
        entries = entries_of(request.config, self.config_folder, None, "the reload request's config")
        await asyncio.to_thread(self.registry.set_entries, entries)
        response = model_management_pb2.ReloadConfigResponse()
        failed = {name: why for name, why in self.registry.failures.items() if name not in self.registry.models}
        if failed:
            response.status.error_code = grpc.StatusCode.UNKNOWN.value[0]
            response.status.error_message = "; ".join(f"{n}: {w}" for n, w in failed.items())
        return response


def create_grpc_server(registry: ModelRegistry, metrics: Metrics, host: str, port: int,
                       config_folder: Path) -> tuple[grpc.aio.Server, int]:
    """The gRPC server (not started) on host:port (0: any free port), and the port it got."""
    # Requests as large as the REST body limit, or gRPC's 4 MiB default if that is larger.
    size = max(registry.limits.max_body_bytes, 4 << 20)
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", size),
                                      ("grpc.max_send_message_length", max(size, 64 << 20))])
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(registry, metrics), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(registry, metrics, config_folder), server)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)  # grpcio raises where it cannot bind (older ones return 0)
    except RuntimeError:
        bound = 0
    if bound == 0:
        raise NmtError(f"cannot listen for gRPC on {address}: the port is in use or not allowed")
    return server, bound
