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
import math
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from tensorflow.core.framework import types_pb2
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

from nmt.errors import NmtError
from nmt.serving import tf_examples
from nmt.serving.calls import CALL_DEADLINE, Calls, ClientDeadline, Tally, Target
from nmt.serving.config import entries_of
from nmt.serving.errors import RequestError
from nmt.serving.registry import Servable, check_input_names

log = logging.getLogger(__name__)
SIGNATURE_DEF = "signature_def"  # the one metadata field TF Serving answers
# The dtypes a request's tensor may hold: data, not handles (DT_RESOURCE, DT_VARIANT) or quantized types.
ARRAY_DTYPES = frozenset(getattr(types_pb2, name) for name in (
    "DT_FLOAT", "DT_DOUBLE", "DT_HALF", "DT_BFLOAT16", "DT_INT8", "DT_INT16", "DT_INT32", "DT_INT64", "DT_UINT8",
    "DT_UINT16", "DT_UINT32", "DT_UINT64", "DT_BOOL", "DT_STRING", "DT_COMPLEX64", "DT_COMPLEX128"))


def target_of(spec: Any) -> Target:
    """A request's ModelSpec as the call core's Target."""
    choice = spec.WhichOneof("version_choice")
    return Target(spec.name, spec.version.value if choice == "version" else None,
                  spec.version_label if choice == "version_label" else None, spec.signature_name)


def _spec_of(servable: Servable, signature: str, target: Any) -> None:
    target.name = servable.name
    target.version.value = servable.version
    target.signature_name = signature


def _model_name(request: Any) -> str:
    spec = getattr(request, "model_spec", None)
    if spec is None and getattr(request, "tasks", None):
        spec = request.tasks[0].model_spec
    return spec.name if spec is not None else ""


def _rpc(api: str) -> Callable:
    """A servicer method run through the call core's metrics (TF Serving's names, entry point
    GRPC) within the client's deadline (not the REST timeout: TF Serving applies that to REST
    only), its failures answered with the gRPC code of their status."""

    def wrap(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        @functools.wraps(method)
        async def call(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
            CALL_DEADLINE.set(ClientDeadline.from_now(context.time_remaining()))  # this RPC's task alone
            try:
                async with self.calls.counted(api, "GRPC", _model_name(request)) as tally:
                    return await method(self, request, tally)
            except RequestError as error:
                await context.abort(getattr(grpc.StatusCode, error.grpc_code, grpc.StatusCode.UNKNOWN), error.message)

        return call

    return wrap


def declared_bytes(proto: Any, dtype: Any, elements: int) -> int:
    """What a TensorProto becomes once TensorFlow fills its short value list out to its shape:
    numbers at their size; strings at their own bytes, the last repeated, plus a pointer each."""
    if proto.dtype != types_pb2.DT_STRING:
        return elements * dtype.size
    values = proto.string_val
    padding = max(elements - len(values), 0) * (len(values[-1]) if values else 0)
    return sum(len(v) for v in values) + padding + 8 * elements


def arrays_of(inputs: Any, specs: dict[str, Any], signature: str, max_bytes: int) -> dict[str, np.ndarray]:
    """A Predict request's input tensors as arrays: their names checked against the signature
    first, then each tensor (:func:`array_of`) within one byte budget for them all."""
    check_input_names(set(inputs), specs, signature)
    arrays, budget = {}, max_bytes
    for name, proto in inputs.items():
        arrays[name], used = array_of(name, proto, budget, max_bytes)
        budget -= used
    return arrays


def array_of(name: str, proto: Any, budget: int, max_bytes: int) -> tuple[np.ndarray, int]:
    """A request's TensorProto as an array and the bytes it declares, checked before anything is
    allocated: a dtype that holds data (not a resource or variant handle), a known shape of sizes
    >= 0, and no more bytes declared than the request has left of what it may carry (TensorFlow
    fills a short value list up to the shape, so a few bytes could otherwise ask for gigabytes)."""
    import tensorflow as tf

    dtype = tf.dtypes.as_dtype(proto.dtype) if proto.dtype in ARRAY_DTYPES else None
    if dtype is None:
        known = proto.dtype in types_pb2.DataType.values()
        kind = types_pb2.DataType.Name(proto.dtype) if known else str(proto.dtype)
        raise RequestError(f"input {name}: dtype {kind} cannot be sent as a request's tensor")
    if proto.tensor_shape.unknown_rank:
        raise RequestError(f"input {name}: the tensor's shape has unknown rank; send its dimensions")
    dims = [d.size for d in proto.tensor_shape.dim]
    if any(size < 0 for size in dims):
        raise RequestError(f"input {name}: dimension sizes must be >= 0, got shape {dims}")
    elements = math.prod(dims)
    declared = declared_bytes(proto, dtype, elements)
    if declared > budget:
        raise RequestError(f"input {name}: shape {dims} declares {declared} bytes, over the {max_bytes} a request "
                           "may carry" + ("" if budget == max_bytes else f" ({budget} left after its other inputs)"))
    if proto.tensor_content and len(proto.tensor_content) != elements * dtype.size:
        raise RequestError(f"input {name}: tensor_content holds {len(proto.tensor_content)} bytes; shape {dims} of "
                           f"{dtype.name} needs {elements * dtype.size}")
    try:
        return tf.make_ndarray(proto), declared
    except (TypeError, ValueError) as error:
        raise RequestError(f"input {name}: {error}") from None


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, calls: Calls) -> None:
        self.calls = calls

    @_rpc("Predict")
    async def Predict(self, request: Any, tally: Tally) -> Any:  # noqa: N802 - the RPC's name
        import tensorflow as tf

        servable, signature = self.calls.resolve(target_of(request.model_spec), tally)
        arrays = arrays_of(request.inputs, servable.input_specs(signature), signature, self.calls.max_message_bytes)
        outputs = await self.calls.predict(servable, signature, arrays)
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

    async def _examples_call(self, request: Any, method: str, tally: Tally) -> tuple[Servable, str, Any]:
        servable, signature = self.calls.resolve(target_of(request.model_spec), tally)
        serialized = tf_examples.examples_from_input(request.input, self.calls.limits)
        return servable, signature, await self.calls.examples(servable, signature, method, serialized, tally)

    @_rpc("Classify")
    async def Classify(self, request: Any, tally: Tally) -> Any:  # noqa: N802
        servable, signature, results = await self._examples_call(request, tf_examples.CLASSIFY_METHOD, tally)
        response = classification_pb2.ClassificationResponse()
        _spec_of(servable, signature, response.model_spec)
        _fill_classifications(response.result, results)
        return response

    @_rpc("Regress")
    async def Regress(self, request: Any, tally: Tally) -> Any:  # noqa: N802
        servable, signature, results = await self._examples_call(request, tf_examples.REGRESS_METHOD, tally)
        response = regression_pb2.RegressionResponse()
        _spec_of(servable, signature, response.model_spec)
        response.result.regressions.extend(regression_pb2.Regression(value=v) for v in results)
        return response

    @_rpc("MultiInference")
    async def MultiInference(self, request: Any, tally: Tally) -> Any:  # noqa: N802
        tasks = [(target_of(task.model_spec), task.method_name) for task in request.tasks]
        serialized = tf_examples.examples_from_input(request.input, self.calls.limits) if tasks else []
        servable, results = await self.calls.multi_inference(tasks, serialized, tally)
        response = inference_pb2.MultiInferenceResponse()
        for (_, method), (signature, values) in zip(tasks, results):
            result = response.results.add()
            _spec_of(servable, signature, result.model_spec)
            if method == tf_examples.CLASSIFY_METHOD:
                _fill_classifications(result.classification_result, values)
            else:
                result.regression_result.regressions.extend(regression_pb2.Regression(value=v) for v in values)
        return response

    @_rpc("GetModelMetadata")
    async def GetModelMetadata(self, request: Any, tally: Tally) -> Any:  # noqa: N802
        fields = list(request.metadata_field)
        if fields != [SIGNATURE_DEF]:
            raise RequestError(f"Metadata field(s) {', '.join(fields) or '(none)'} not supported; "
                               f"ask for {SIGNATURE_DEF!r}")
        target = target_of(request.model_spec)
        servable = self.calls.registry.resolve(target.name, target.version, target.label)
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
    def __init__(self, calls: Calls, config_folder: Path, mounts: dict[str, str] | None = None) -> None:
        self.calls, self.registry, self.config_folder, self.mounts = calls, calls.registry, config_folder, mounts

    @_rpc("GetModelStatus")
    async def GetModelStatus(self, request: Any, tally: Tally) -> Any:  # noqa: N802
        target = target_of(request.model_spec)
        states = self.registry.status(target.name, target.version, target.label)
        response = get_model_status_pb2.GetModelStatusResponse()
        enum = get_model_status_pb2.ModelVersionStatus.State
        for state in states:
            status = response.model_version_status.add(version=int(state["version"]), state=enum.Value(state["state"]))
            status.status.error_code = getattr(grpc.StatusCode, state["status"]["error_code"]).value[0]
            status.status.error_message = state["status"]["error_message"]
        return response

    @_rpc("HandleReloadConfigRequest")
    async def HandleReloadConfigRequest(self, request: Any, tally: Tally) -> Any:  # noqa: N802
        """Serves the models of the request's ModelServerConfig from now on (loading in a thread)."""
        entries = entries_of(request.config, self.config_folder, self.mounts, "the reload request's config")
        await asyncio.to_thread(self.registry.set_entries, entries)
        response = model_management_pb2.ReloadConfigResponse()
        failed = {name: why for name, why in self.registry.failures.items() if name not in self.registry.models}
        if failed:
            response.status.error_code = grpc.StatusCode.UNKNOWN.value[0]
            response.status.error_message = "; ".join(f"{n}: {w}" for n, w in failed.items())
        return response


def create_grpc_server(calls: Calls, host: str, port: int, config_folder: Path,
                       mounts: dict[str, str] | None = None) -> tuple[grpc.aio.Server, int]:
    """The gRPC server (not started) on host:port (0: any free port), and the port it got."""
    size = calls.max_message_bytes
    # Calls past --max-connections at once are answered RESOURCE_EXHAUSTED, as REST answers 503.
    server = grpc.aio.server(maximum_concurrent_rpcs=calls.limits.max_connections,
                             options=[("grpc.max_receive_message_length", size),
                                      ("grpc.max_send_message_length", max(size, 64 << 20))])
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(calls), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(calls, config_folder, mounts), server)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)  # grpcio raises where it cannot bind (older ones return 0)
    except RuntimeError:
        bound = 0
    if bound == 0:
        raise NmtError(f"cannot listen for gRPC on {address}: the port is in use or not allowed")
    return server, bound
