"""TF Serving's REST API: ``GET /v1/models/{name}[/versions/{v}][/metadata]`` and
``POST /v1/models/{name}[/versions/{v}]:predict``, with its JSON and its ``{"error": ...}`` answers,
so a client written against ``tensorflow_model_server`` works against ``nmt serve``. Any SavedModel
is served here, also one nmt did not export."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from nmt import signatures
from nmt.serving.http_guard import RequestError, read_json_body
from nmt.serving.registry import ModelRegistry, registry_of
from nmt.serving.rest_codec import check_request_size, format_predictions, parse_predict_body

router = APIRouter(tags=["TensorFlow Serving REST API"])
Registry = Annotated[ModelRegistry, Depends(registry_of)]
PREDICT = ":predict"


def name_version(parts: list[str]) -> tuple[str, int | None]:
    """``[name]`` or ``[name, "versions", v]`` (the path split at "/") -> the name and version."""
    if len(parts) == 1 and parts[0]:
        return parts[0], None
    if len(parts) == 3 and parts[1] == "versions":
        if not parts[2].isdigit():
            raise RequestError(f"version must be a number, got {parts[2]!r}")
        return parts[0], int(parts[2])
    raise RequestError("expected /v1/models/{name} or /v1/models/{name}/versions/{version}", 404)


@router.get("/v1/models/{rest:path}")
async def model_status(rest: str, registry: Registry) -> Any:
    """A model's version status (all its versions, or one), or one version's signature metadata."""
    parts = rest.split("/")
    metadata = parts[-1] == "metadata"
    if metadata:
        parts = parts[:-1]
    name, version = name_version(parts)
    if version is None and not metadata:
        registry.get(name)  # the 404 of a model not served
        return {"model_version_status": [s.status() for s in registry.models[name].values()]}
    servable = registry.get(name, version)
    if not metadata:
        return {"model_version_status": [servable.status()]}
    return {
        "model_spec": {"name": name, "signature_name": "", "version": str(servable.version)},
        "metadata": {"signature_def": {
            "signature_def": servable.signature_defs,
            "@type": "type.googleapis.com/tensorflow.serving.SignatureDefMap",
        }},
    }


@router.post("/v1/models/{rest:path}")
async def predict(rest: str, request: Request, registry: Registry) -> Any:
    """``:predict`` in the row or the columnar format, with any signature of the model."""
    if not rest.endswith(PREDICT):
        verb = rest.rsplit(":", 1)[-1] if ":" in rest else ""
        raise RequestError(f"unsupported method {verb!r}: this server implements :predict", 404 if not verb else 400)
    name, version = name_version(rest[: -len(PREDICT)].split("/"))
    servable = registry.get(name, version)
    limits = registry.limits
    body = await read_json_body(request, limits.max_body_bytes, limits.body_timeout_s)
    default = signatures.SERVING_DEFAULT
    signature = body.get("signature_name", default) if isinstance(body, dict) else default
    if not isinstance(signature, str):
        raise RequestError("signature_name must be a string")
    signature = signature or signatures.SERVING_DEFAULT
    arrays, kind = parse_predict_body(body, servable.input_specs(signature))
    check_request_size(arrays, limits)
    return format_predictions(await servable.predict(signature, arrays), kind)
