"""TF Serving's REST API: ``GET /v1/models/{name}[/versions/{v}|/labels/{label}][/metadata]`` and
``POST /v1/models/{name}[/versions/{v}|/labels/{label}]:(predict|classify|regress)``, with its JSON
(NaN and Infinity included) and its ``{"error": ...}`` answers, so a client written against
``tensorflow_model_server`` works against ``nmt serve``. Any SavedModel is served here, TF1 or TF2,
also one nmt did not export."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from nmt.serving import tf_examples
from nmt.serving.calls import Calls, Target, calls_of
from nmt.serving.errors import RequestError
from nmt.serving.http_guard import read_json_body
from nmt.serving.registry import ModelRegistry, registry_of
from nmt.serving.rest_codec import format_predictions, parse_predict_body

router = APIRouter(tags=["TensorFlow Serving REST API"])
Registry = Annotated[ModelRegistry, Depends(registry_of)]
CallCore = Annotated[Calls, Depends(calls_of)]
VERBS = {"predict": "Predict", "classify": "Classify", "regress": "Regress"}  # REST verb -> gRPC API name


class TFServingJSON(JSONResponse):
    """JSON as TF Serving writes it: NaN and Infinity are numbers' values (its JSON conformance)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False, allow_nan=True, separators=(",", ":")).encode("utf-8")


def model_path(parts: list[str]) -> tuple[str, int | None, str | None]:
    """``[name]``, ``[name, "versions", v]`` or ``[name, "labels", label]`` (the path split at "/")
    -> the name, version and label."""
    if len(parts) == 1 and parts[0]:
        return parts[0], None, None
    if len(parts) == 3 and parts[0] and parts[1] == "versions":
        if not (parts[2].isascii() and parts[2].isdigit()):
            raise RequestError(f"version must be a number, got {parts[2]!r}")
        return parts[0], int(parts[2]), None
    if len(parts) == 3 and parts[0] and parts[1] == "labels" and parts[2]:
        return parts[0], None, parts[2]
    raise RequestError("expected /v1/models/{name}, /v1/models/{name}/versions/{version} or "
                       "/v1/models/{name}/labels/{label}", 404)


def metadata(servable: Any) -> dict[str, Any]:
    """GetModelMetadataResponse as JSON: the model spec and its SignatureDefMap."""
    return {
        "model_spec": {"name": servable.name, "signature_name": "", "version": str(servable.version)},
        "metadata": {"signature_def": {
            "signature_def": servable.signatures_json,
        }},
    }


@router.get("/v1/models/{rest:path}", response_class=TFServingJSON)
async def model_status(rest: str, registry: Registry) -> Any:
    """A model's version states (all its versions, or one), or one version's signature metadata."""
    parts = rest.split("/")
    wants_metadata = parts[-1] == "metadata"
    if wants_metadata:
        parts = parts[:-1]
    name, version, label = model_path(parts)
    if wants_metadata:
        return TFServingJSON(metadata(registry.resolve(name, version, label)))
    return TFServingJSON({"model_version_status": registry.status(name, version, label)})


@router.post("/v1/models/{rest:path}", response_class=TFServingJSON)
async def model_call(rest: str, request: Request, calls: CallCore) -> Any:
    """``:predict`` (row or columnar format), ``:classify`` and ``:regress`` (examples format)."""
    path, _, verb = rest.rpartition(":")
    if not path or verb not in VERBS:
        raise RequestError(f"unsupported method {verb!r}: expected :predict, :classify or :regress"
                           if path else "expected /v1/models/{name}[...]:predict, :classify or :regress", 404)
    name, version, label = model_path(path.split("/"))
    async with calls.counted(VERBS[verb], "REST", name) as tally:
        limits = calls.limits
        body = await read_json_body(request, limits.max_body_bytes, limits.body_timeout_s)
        signature = body.get("signature_name", "") if isinstance(body, dict) else ""
        if not isinstance(signature, str):
            raise RequestError("signature_name must be a string")
        servable, signature = calls.resolve(Target(name, version, label, signature), tally)
        if verb == "predict":
            arrays, kind = parse_predict_body(body, servable.input_specs(signature))
            return TFServingJSON(format_predictions(await calls.predict(servable, signature, arrays), kind))
        method = tf_examples.CLASSIFY_METHOD if verb == "classify" else tf_examples.REGRESS_METHOD
        results = await calls.examples(servable, signature, method, tf_examples.examples_from_json(body, limits), tally)
        return TFServingJSON({"results": results})
