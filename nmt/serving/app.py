"""The ``nmt serve`` application: TF Serving's REST API and the task endpoints behind the HTTP
guard, ``/healthz``, the demo page at ``/`` and the OpenAPI page at ``/docs``; and :func:`serve`,
which loads the models and runs it with uvicorn."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse

from nmt.errors import NmtError
from nmt.serving import task_api, tfserving_api
from nmt.serving.config import Limits, read_model_config
from nmt.serving.http_guard import Access, AccessGuard, RequestError, request_timeout_protocol
from nmt.serving.registry import ModelRegistry, registry_of

log = logging.getLogger(__name__)

DEMO_PAGE = Path(__file__).resolve().parent.parent / "static" / "demo.html"
DESCRIPTION = ("TensorFlow Serving's REST API (predict, model status) over nmt's exported SavedModels, plus "
               "/v1/translate (with attention maps), /v1/next-word, /v1/generate, /v1/inspect (hidden states) "
               "and a demo page at /.")

site = APIRouter()


@site.get("/healthz")
async def healthz(registry: Annotated[ModelRegistry, Depends(registry_of)]) -> dict[str, Any]:
    """The models served, their tasks, the ones that failed to load, and batching counters."""
    return {
        "status": "ok",
        "models": {name: sorted(versions) for name, versions in registry.models.items()},
        "tasks": {servable.name: servable.task for servable in registry.latest()},
        "failed": registry.failures,
        # Model calls and the rows they carried, per signature: rows / batches is the mean batch.
        "batching": registry.batching_stats(),
    }


@site.get("/", include_in_schema=False)
async def demo_page() -> HTMLResponse:
    """The demo page: static HTML and JavaScript over the JSON endpoints."""
    return HTMLResponse(DEMO_PAGE.read_text(encoding="utf-8"))


async def on_request_error(request: Request, exc: RequestError) -> JSONResponse:
    answer = JSONResponse({"error": exc.message}, status_code=exc.status)
    if exc.close:  # the rest of the body is not read: the connection cannot carry another request
        answer.headers["connection"] = "close"
    return answer


async def on_invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    # FastAPI's own checks (path and query parameters): TF Serving's 400 shape, not FastAPI's 422.
    problems = "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'body'}: {e.get('msg', 'invalid')}" for e in exc.errors()
    )
    return JSONResponse({"error": f"invalid request: {problems}"}, status_code=400)


def create_app(registry: ModelRegistry, access: Access | None = None) -> FastAPI:
    app = FastAPI(title="nmt serve", description=DESCRIPTION, version="1")
    app.state.registry = registry  # what the routers' dependencies read (registry_of)
    app.add_exception_handler(RequestError, on_request_error)
    app.add_exception_handler(RequestValidationError, on_invalid_request)
    app.add_middleware(AccessGuard, access=access or Access(), max_body_bytes=registry.limits.max_body_bytes)
    app.include_router(site)
    app.include_router(tfserving_api.router)
    app.include_router(task_api.router)
    return app


def load_models(config_path: str | Path, limits: Limits, mounts: dict[str, str] | None = None) -> ModelRegistry:
    """Every model of the config that loads (failures are logged); NmtError if none does."""
    registry = ModelRegistry(read_model_config(config_path, mounts), limits)
    if not registry.models:
        raise NmtError(f"{config_path}: no model could be loaded")
    return registry


def run_app(registry: ModelRegistry, host: str, port: int, access: Access | None = None) -> None:
    """Serves the registry's models until interrupted."""
    import uvicorn

    limits = registry.limits
    uvicorn.run(create_app(registry, access or Access(bind_host=host)), host=host, port=port, log_level="warning",
                http=request_timeout_protocol(limits.body_timeout_s),
                # Connections (and requests in progress) past the limit are answered 503.
                limit_concurrency=limits.max_connections)


def serve(config_path: str | Path, host: str, port: int, limits: Limits, mounts: dict[str, str] | None = None,
          access: Access | None = None) -> None:
    """Loads the models of a TF Serving ``models.config`` and serves them on host:port."""
    registry = load_models(config_path, limits, mounts)
    for name, versions in registry.models.items():
        log.info("serving %s versions %s", name, sorted(versions))
    run_app(registry, host, port, access)
