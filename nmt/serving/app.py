"""The ``nmt serve`` application: TF Serving's REST API and the task endpoints behind the HTTP
guard, ``/healthz``, Prometheus metrics, the demo page at ``/`` and the OpenAPI page at ``/docs``;
and :func:`run_servers`, which serves it with uvicorn beside TF Serving's gRPC API on one event
loop (so both share request batches) while threads poll the model folders and the model config."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from nmt.errors import NmtError
from nmt.serving import task_api, tfserving_api
from nmt.serving.config import Limits, ModelEntry, Monitoring, read_model_config
from nmt.serving.http_guard import Access, AccessGuard, RequestError, request_timeout_protocol
from nmt.serving.metrics import Metrics
from nmt.serving.registry import ModelRegistry, registry_of

log = logging.getLogger(__name__)

DEMO_PAGE = Path(__file__).resolve().parent.parent / "static" / "demo.html"
DESCRIPTION = ("TensorFlow Serving's REST API (predict, classify, regress, model status and metadata) over any "
               "SavedModel, plus /v1/translate (with attention maps), /v1/next-word, /v1/generate, /v1/inspect "
               "(hidden states) and a demo page at /.")

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


async def on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    # Routing's own answers (an unknown path, a wrong method): TF Serving's {"error": ...} shape.
    return JSONResponse({"error": f"{exc.detail}: {request.method} {request.url.path}"}, status_code=exc.status_code,
                        headers=getattr(exc, "headers", None))


async def on_invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    # FastAPI's own checks (path and query parameters): TF Serving's 400 shape, not FastAPI's 422.
    problems = "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'body'}: {e.get('msg', 'invalid')}" for e in exc.errors()
    )
    return JSONResponse({"error": f"invalid request: {problems}"}, status_code=400)


def create_app(registry: ModelRegistry, access: Access | None = None, metrics: Metrics | None = None,
               monitoring: Monitoring | None = None) -> FastAPI:
    """The REST application; with ``monitoring`` enabled, Prometheus text at its path."""
    app = FastAPI(title="nmt serve", description=DESCRIPTION, version="1")
    app.state.registry = registry  # what the routers' dependencies read (registry_of)
    app.state.metrics = metrics or Metrics()
    app.add_exception_handler(RequestError, on_request_error)
    app.add_exception_handler(RequestValidationError, on_invalid_request)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_middleware(AccessGuard, access=access or Access(), max_body_bytes=registry.limits.max_body_bytes)
    if monitoring is not None and monitoring.enabled:
        async def prometheus_metrics() -> PlainTextResponse:
            return PlainTextResponse(app.state.metrics.render(), media_type="text/plain; version=0.0.4")

        app.add_api_route(monitoring.path, prometheus_metrics, methods=["GET"], include_in_schema=False)
    app.include_router(site)
    app.include_router(tfserving_api.router)
    app.include_router(task_api.router)
    return app


def _poll(every_s: float, stop: threading.Event, work: Callable[[], None], what: str) -> threading.Thread:
    def loop() -> None:
        while not stop.wait(every_s):
            try:
                work()
            except NmtError as error:  # a config being edited: keep serving what was loaded
                log.warning("%s: %s", what, error)
            except Exception:  # noqa: BLE001 - the poller must outlive one bad pass
                log.exception("%s failed", what)

    thread = threading.Thread(target=loop, name=what, daemon=True)
    thread.start()
    return thread


def run_servers(registry: ModelRegistry, host: str, rest_port: int | None, grpc_port: int | None = None,
                access: Access | None = None, monitoring: Monitoring | None = None,
                file_system_poll_s: float = 0, config_poll: tuple[float, Callable[[], list[ModelEntry]]] | None = None,
                config_folder: Path = Path("."), on_ready: Callable[[dict[str, int]], None] | None = None) -> None:
    """Serves the registry over REST and/or gRPC until interrupted. ``file_system_poll_s`` > 0:
    new version folders are loaded (and ones the policy drops unloaded) at that interval;
    ``config_poll`` (seconds, reader): the model config is read again at that interval."""
    import uvicorn

    metrics = Metrics()
    stop = threading.Event()
    if file_system_poll_s > 0:
        _poll(file_system_poll_s, stop, registry.sync, "version folder polling")
    if config_poll is not None and config_poll[0] > 0:
        every_s, read_entries = config_poll
        _poll(every_s, stop, lambda: registry.set_entries(read_entries()), "model config polling")

    async def main() -> None:
        tasks, ports = [], {}
        rest = None
        if rest_port is not None:
            limits = registry.limits
            rest = uvicorn.Server(uvicorn.Config(
                create_app(registry, access or Access(bind_host=host), metrics, monitoring), host=host, port=rest_port,
                log_level="warning", http=request_timeout_protocol(limits.body_timeout_s),
                # Connections (and requests in progress) past the limit are answered 503.
                limit_concurrency=limits.max_connections))
            tasks.append(asyncio.ensure_future(rest.serve()))
            ports["rest"] = rest_port
        grpc_server = None
        if grpc_port is not None:
            from nmt.serving.grpc_api import create_grpc_server

            grpc_server, ports["grpc"] = create_grpc_server(registry, metrics, host, grpc_port, config_folder)
            await grpc_server.start()
            tasks.append(asyncio.ensure_future(grpc_server.wait_for_termination()))
        if rest is not None:
            while not rest.started and not tasks[0].done():
                await asyncio.sleep(0.02)
            if rest.started:  # the port it got (--port 0: any free one)
                ports["rest"] = rest.servers[0].sockets[0].getsockname()[1]
        if on_ready is not None:
            on_ready(ports)
        try:
            # Either server ending (uvicorn on SIGINT/SIGTERM, or failing to bind) ends both.
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        finally:
            if grpc_server is not None:
                await grpc_server.stop(grace=1)
            if rest is not None:
                rest.should_exit = True
            for task in tasks:
                if not task.done():
                    await asyncio.wait([task], timeout=5)

    try:
        asyncio.run(main())
    finally:
        stop.set()


def serve(config_path: str | Path, host: str, port: int, limits: Limits, mounts: dict[str, str] | None = None,
          access: Access | None = None, grpc_port: int | None = None) -> None:
    """Serves the models of a TF Serving ``models.config`` on host:port (and gRPC on ``grpc_port``):
    those that load; the others are reported by /healthz and the status calls."""
    registry = ModelRegistry(read_model_config(config_path, mounts), limits)
    run_servers(registry, host, port, grpc_port, access)
