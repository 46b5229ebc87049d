"""The ``nmt serve`` application: TF Serving's REST API and the task endpoints behind the HTTP
guard, ``/healthz``, Prometheus metrics, the demo page at ``/`` and the OpenAPI page at ``/docs``;
and :func:`start`, which serves it with uvicorn beside TF Serving's gRPC API on one event loop
(so both share request batches and one call core) while threads poll the model folders and the
model config."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
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
from nmt.serving.calls import Calls
from nmt.serving.config import SERVED, Access, Monitoring, ServerSettings
from nmt.serving.errors import RequestError
from nmt.serving.http_guard import AccessGuard, request_timeout_protocol
from nmt.serving.metrics import Metrics
from nmt.serving.registry import ModelRegistry, registry_of

log = logging.getLogger(__name__)

DEMO_PAGE = Path(__file__).resolve().parent.parent / "static" / "demo.html"

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


def create_app(served: ModelRegistry | Calls, access: Access | None = None,
               monitoring: Monitoring | None = None) -> FastAPI:
    """The REST application over a registry (with metrics of its own) or a server's call core
    (metrics shared with its gRPC API); with ``monitoring`` enabled, Prometheus text at its path."""
    calls = served if isinstance(served, Calls) else Calls(served, Metrics())
    registry = calls.registry
    app = FastAPI(title="nmt serve", description=SERVED, version="1")
    app.state.registry, app.state.calls = registry, calls  # what the routers' dependencies read
    app.state.metrics = calls.metrics
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
                log.warning("%s: %s; still serving the last good one", what, error)
            except Exception:  # noqa: BLE001 - the poller must outlive one bad pass
                log.exception("%s failed", what)

    thread = threading.Thread(target=loop, name=what, daemon=True)
    thread.start()
    return thread


class RunningServer:
    """A server :func:`start` started: its registry, the ports it listens on (``"rest"``,
    ``"grpc"``), :meth:`wait` (until it ends or the process is interrupted) and :meth:`stop`."""

    def __init__(self, settings: ServerSettings, registry: ModelRegistry) -> None:
        self.settings, self.registry = settings, registry
        self.metrics = Metrics()
        self.calls = Calls(registry, self.metrics)
        self.ports: dict[str, int] = {}
        self._ready = threading.Event()
        self._halt = threading.Event()  # stops the pollers
        self._failure: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="nmt-server", daemon=True)

    def launch(self) -> None:
        """Starts the pollers and the servers' thread; returns once both listen (or raises)."""
        settings, registry = self.settings, self.registry
        if settings.file_system_poll_s > 0:
            _poll(settings.file_system_poll_s, self._halt, registry.sync, "version folder polling")
        if settings.config_poll_s > 0:
            _poll(settings.config_poll_s, self._halt, lambda: registry.set_entries(settings.read_entries()),
                  "model config polling")
        self._thread.start()
        self._ready.wait()
        if self._failure is not None:
            self.stop()
            raise self._failure

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as error:  # noqa: BLE001 - handed to start() or wait()
            self._failure = error
        finally:
            self._halt.set()
            self._ready.set()

    async def _main(self) -> None:
        import uvicorn

        settings, limits = self.settings, self.registry.limits
        self._loop, self._stopping = asyncio.get_running_loop(), asyncio.Event()
        tasks: list[asyncio.Future] = []
        rest = grpc_server = stopping = None
        try:
            if settings.rest_port is not None:
                app = create_app(self.calls, settings.access or Access(bind_host=settings.host), settings.monitoring)
                rest = uvicorn.Server(uvicorn.Config(
                    app, host=settings.host, port=settings.rest_port, log_level="warning",
                    http=request_timeout_protocol(limits.body_timeout_s),
                    # Connections (and requests in progress) past the limit are answered 503.
                    limit_concurrency=limits.max_connections))
                tasks.append(asyncio.ensure_future(_serve_rest(rest, f"{settings.host}:{settings.rest_port}")))
            if settings.grpc_port is not None:
                from nmt.serving.grpc_api import create_grpc_server

                grpc_server, self.ports["grpc"] = create_grpc_server(self.calls, settings.host, settings.grpc_port,
                                                                     settings.config_folder, settings.mounts)
                await grpc_server.start()
                tasks.append(asyncio.ensure_future(grpc_server.wait_for_termination()))
            if rest is not None:
                while not rest.started and not tasks[0].done():
                    await asyncio.sleep(0.02)
                if not rest.started:
                    tasks[0].result()  # _serve_rest's NmtError
                self.ports["rest"] = rest.servers[0].sockets[0].getsockname()[1]  # port 0: the one it got
            self._ready.set()
            stopping = asyncio.ensure_future(self._stopping.wait())
            # Either server ending (or failing), or stop(), ends both.
            done, _ = await asyncio.wait([*tasks, stopping], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        finally:
            if stopping is not None:
                stopping.cancel()
            if grpc_server is not None:
                await grpc_server.stop(grace=1)
            if rest is not None:
                rest.should_exit = True
            for task in tasks:
                if not task.done():
                    await asyncio.wait([task], timeout=5)

    def stop(self, timeout_s: float = 30) -> None:
        """Ends both servers (requests in progress get up to a second over gRPC, five over REST)
        and the pollers."""
        self._halt.set()
        if self._loop is not None and self._stopping is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop ended meanwhile
                self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(timeout_s)

    def wait(self) -> None:
        """Serves until the servers end, or until SIGINT or SIGTERM (then stops them cleanly)."""
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, _interrupt)
        try:
            while self._thread.is_alive():
                self._thread.join(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        if self._failure is not None:
            raise self._failure


async def _serve_rest(rest: Any, address: str) -> None:
    """uvicorn's serve(), with its way of saying it could not bind (sys.exit, its log says why)
    turned into an NmtError."""
    try:
        await rest.serve()
    except SystemExit:
        raise NmtError(f"cannot listen for REST on {address}: the port is in use or not allowed") from None


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def start(settings: ServerSettings, registry: ModelRegistry | None = None) -> RunningServer:
    """Loads the models of ``settings`` (those that fail are reported, the others served), or takes
    ``registry`` as loaded, and serves them over REST and/or gRPC on one event loop in a background
    thread, with the pollers of new version folders and of the model config. Returns once both
    listen (their ports in ``.ports``); an NmtError if a port cannot be bound."""
    server = RunningServer(settings, registry or ModelRegistry(settings.read_entries(), settings.limits))
    server.launch()
    return server
