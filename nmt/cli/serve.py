"""``nmt serve``: exported models over HTTP with TensorFlow Serving's REST API (and its gRPC API
with --grpc-port). Its options, their checks and the :class:`ServerSettings` they make import
nothing heavy (no TensorFlow, no FastAPI), so `nmt --help` and argument errors come before
TensorFlow is loaded; ``nmt-model-server`` (:mod:`nmt.cli.model_server`) ends in the same
:func:`run_server`."""

from __future__ import annotations

import argparse
import functools
import math
import sys
import textwrap
from pathlib import Path

from nmt.cli.startup import import_tensorflow
from nmt.errors import NmtError
from nmt.serving.config import SERVED, Access, Limits, Monitoring, ServerSettings, read_model_config


def add_parser(subparsers) -> argparse.ArgumentParser:
    serve = subparsers.add_parser(
        "serve",
        help="serve exported models (or any SavedModel) with TensorFlow Serving's REST and gRPC APIs",
        description=textwrap.fill(
            "Loads every model of a TF Serving models.config (a ModelServerConfig text proto; absolute base paths "
            "under /serve are found in the config file's folder, as serve/docker-compose.yml mounts it) and answers "
            f"{SERVED} The gRPC port is --grpc-port. Concurrent requests are batched (up to --max-batch-size rows, "
            "waiting at most --max-wait-ms). A model that fails to load is reported and the others are served; "
            "with --poll-seconds, new version folders are served without a restart. For tensorflow_model_server's "
            "own flags, use nmt-model-server.", 100),
        epilog="examples:\n  nmt serve --config serve/models.config --port 8501\n"
        "  nmt serve --config serve/models.config --grpc-port 8500 --poll-seconds 1 --metrics-path /metrics\n"
        "  curl -d '{\"instances\": [\"I love eating\"]}' localhost:8501/v1/models/lm-en:predict\n"
        "  curl -d '{\"text\": [\"Good morning.\"], \"beam\": 5}' localhost:8501/v1/translate",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_serve_arguments(serve)
    serve.set_defaults(func=run)
    return serve


DEFAULTS = Limits()  # one place for the defaults: the options' and the library's


def add_serve_arguments(serve: argparse.ArgumentParser) -> None:
    serve.add_argument("--config", required=True, help="TF Serving model config file (serve/models.config)")
    serve.add_argument("--mount", action="append", metavar="SERVER_PATH=LOCAL_FOLDER",
                       help="where an absolute base_path of the config lives here, like a Docker volume "
                       "(default: /serve=the config file's folder, as serve/docker-compose.yml mounts it)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8501, help="REST port (default 8501, TF Serving's REST port)")
    serve.add_argument("--grpc-port", type=int, metavar="PORT",
                       help="also serve TF Serving's gRPC API (PredictionService, ModelService) on PORT, e.g. 8500, "
                       "its gRPC port; REST and gRPC requests share batches")
    serve.add_argument("--poll-seconds", type=float, default=0, metavar="S",
                       help="look for new version folders every S seconds: a new version is loaded and served, "
                       "then the ones the version policy drops are unloaded, with no restart and no failed "
                       "request (TF Serving's --file_system_poll_wait_seconds; default 0: at start only)")
    serve.add_argument("--config-poll-seconds", type=float, default=0, metavar="S",
                       help="read --config again every S seconds: added models load, removed ones unload "
                       "(TF Serving's --model_config_file_poll_wait_seconds; default 0: never)")
    serve.add_argument("--metrics-path", metavar="PATH",
                       help="serve Prometheus metrics (TF Serving's names: request counts and latency) at PATH on the "
                       "REST port, e.g. /monitoring/prometheus/metrics")
    serve.add_argument("--request-timeout-ms", type=float, default=DEFAULTS.request_timeout_s * 1000,
                       help="a REST or task-endpoint request's model work may take this long; past it the answer "
                       "is 504 (a gRPC call ends at its client's own deadline, DEADLINE_EXCEEDED) "
                       f"(default {DEFAULTS.request_timeout_s * 1000:g})")
    serve.add_argument("--max-batch-size", type=int, default=DEFAULTS.max_batch_size,
                       help=f"rows per model call (default {DEFAULTS.max_batch_size})")
    serve.add_argument("--max-wait-ms", type=float, default=DEFAULTS.max_wait_ms, help="how long a request waits "
                       f"for others to batch with (default {DEFAULTS.max_wait_ms:g})")
    serve.add_argument("--no-batching", action="store_true", help="run every request on its own")
    serve.add_argument("--max-request-rows", type=int, default=DEFAULTS.max_request_rows,
                       help=f"instances per request (default {DEFAULTS.max_request_rows})")
    serve.add_argument("--max-body-bytes", type=int, default=DEFAULTS.max_body_bytes,
                       help=f"request body limit (default {DEFAULTS.max_body_bytes >> 20} MiB)")
    serve.add_argument("--body-timeout-s", type=float, default=DEFAULTS.body_timeout_s,
                       help="seconds a client has to send a request's headers, and then its body; slower clients "
                       f"get 408 and are disconnected (default {DEFAULTS.body_timeout_s:g})")
    serve.add_argument("--max-connections", type=int, default=DEFAULTS.max_connections,
                       help="open connections (and requests in progress) at once; requests past it get 503 "
                       f"(default {DEFAULTS.max_connections})")
    serve.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                       help="also accept requests whose Host header is NAME (repeatable; '*': any). By default "
                       "only the --host address, localhost, 127.0.0.1 and [::1] are: a request for another "
                       "name is refused (403), against DNS rebinding")
    serve.add_argument("--cors", action="append", default=[], metavar="ORIGIN",
                       help="let web pages of ORIGIN (e.g. http://localhost:3000; repeatable; '*': any) call the "
                       "API from a browser, with CORS headers. Browser requests from other origins than the "
                       "server's own are refused (403); clients that send no Origin (curl, scripts) are not")


def check_serve_arguments(args: argparse.Namespace) -> dict[str, str] | None:
    """NmtError for a bad option; returns the --mount mapping (None: the default)."""
    for name in ("port", "max_batch_size", "max_request_rows", "max_body_bytes", "max_connections"):
        if getattr(args, name) < (0 if name == "port" else 1):
            raise NmtError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    check_port("--grpc-port", args.grpc_port)
    if args.grpc_port is not None and args.grpc_port == args.port and args.port:
        raise NmtError(f"--grpc-port {args.grpc_port} is the REST --port too; give them different ports")
    for name in ("poll_seconds", "config_poll_seconds"):
        check_seconds(f"--{name.replace('_', '-')}", getattr(args, name))
    if args.metrics_path is not None and not args.metrics_path.startswith("/"):
        raise NmtError(f"--metrics-path must start with '/', got {args.metrics_path!r}")
    if not (math.isfinite(args.request_timeout_ms) and args.request_timeout_ms > 0):
        raise NmtError(f"--request-timeout-ms must be a positive number, got {args.request_timeout_ms}")
    if not (math.isfinite(args.body_timeout_s) and args.body_timeout_s > 0):
        raise NmtError(f"--body-timeout-s must be a positive number of seconds, got {args.body_timeout_s}")
    if not (math.isfinite(args.max_wait_ms) and args.max_wait_ms >= 0):
        raise NmtError(f"--max-wait-ms must be a number >= 0, got {args.max_wait_ms}")
    for origin in args.cors:
        if origin != "*" and (not origin.startswith(("http://", "https://")) or origin.count("/") != 2):
            raise NmtError(f"--cors {origin!r}: expected an origin, scheme://host[:port] with no path, "
                           "e.g. http://localhost:3000 (or '*')")
    for name in args.allowed_host:
        if not name or "/" in name or " " in name:
            raise NmtError(f"--allowed-host {name!r}: expected a host name such as myserver.local (or '*')")
    if not args.mount:
        return None
    mounts = {}
    for item in args.mount:
        if "=" not in item:
            raise NmtError(f"--mount {item!r}: expected SERVER_PATH=LOCAL_FOLDER, e.g. /serve=serve")
        prefix, folder = item.split("=", 1)
        mounts[prefix] = folder
    return mounts


def check_port(flag: str, port: int | None) -> None:
    if port is not None and not 0 <= port <= 65535:
        raise NmtError(f"{flag} must be a port number (0 to 65535), got {port}")


def check_seconds(flag: str, seconds: float) -> None:
    if not (math.isfinite(seconds) and seconds >= 0):
        raise NmtError(f"{flag} must be a number of seconds >= 0, got {seconds}")


def announce(registry, ports: dict[str, int]) -> None:
    """The command's summary on stderr once it listens: what it serves, what failed, its ports."""
    for name, versions in registry.models.items():
        print(f"serving {name} versions {sorted(versions)}", file=sys.stderr)
    for name, why in registry.failures.items():
        print(f"not serving {name}: {why}", file=sys.stderr)
    apis = ", ".join(f"{'REST' if api == 'rest' else 'gRPC'} on port {port}" for api, port in ports.items())
    print(f"listening: {apis}", file=sys.stderr, flush=True)


def serve_settings(args: argparse.Namespace) -> ServerSettings:
    """The server `nmt serve`'s options describe (checked first: NmtError for a bad one)."""
    mounts = check_serve_arguments(args)
    limits = Limits(
        max_batch_size=args.max_batch_size, max_wait_ms=args.max_wait_ms, batching=not args.no_batching,
        max_request_rows=args.max_request_rows, max_body_bytes=args.max_body_bytes,
        body_timeout_s=args.body_timeout_s, max_connections=args.max_connections,
        request_timeout_s=args.request_timeout_ms / 1000,
    )
    read_model_config(args.config, mounts)  # a bad config is an error before TensorFlow loads
    return ServerSettings(
        read_entries=functools.partial(read_model_config, args.config, mounts), limits=limits, host=args.host,
        rest_port=args.port, grpc_port=args.grpc_port,
        access=Access(bind_host=args.host, allowed_hosts=tuple(args.allowed_host), cors_origins=tuple(args.cors)),
        monitoring=Monitoring(True, args.metrics_path) if args.metrics_path else None,
        file_system_poll_s=args.poll_seconds, config_poll_s=args.config_poll_seconds,
        config_folder=Path(args.config).parent, mounts=mounts,
    )


def run_server(settings: ServerSettings) -> int:
    """Imports TensorFlow, loads the models, says what it serves and serves until interrupted (both
    command lines end here)."""
    import_tensorflow()
    from nmt.serving.app import start

    server = start(settings)
    announce(server.registry, server.ports)
    server.wait()
    return 0


def run(args: argparse.Namespace) -> int:
    return run_server(serve_settings(args))
