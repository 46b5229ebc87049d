"""The options of `nmt serve` and how they become a running server. Imports nothing heavy, so that
`nmt --help` and argument errors come before TensorFlow is loaded."""

from __future__ import annotations

import argparse

from nmt.errors import NmtError


def add_serve_arguments(serve: argparse.ArgumentParser) -> None:
    serve.add_argument("--config", required=True, help="TF Serving model config file (serve/models.config)")
    serve.add_argument("--mount", action="append", metavar="SERVER_PATH=LOCAL_FOLDER",
                       help="where an absolute base_path of the config lives here, like a Docker volume "
                       "(default: /serve=the config file's folder, as serve/docker-compose.yml mounts it)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8501, help="port (default 8501, TF Serving's REST port)")
    serve.add_argument("--max-batch-size", type=int, default=32, help="rows per model call (default 32)")
    serve.add_argument("--max-wait-ms", type=float, default=5.0, help="how long a request waits for others to "
                       "batch with (default 5)")
    serve.add_argument("--no-batching", action="store_true", help="run every request on its own")
    serve.add_argument("--max-request-rows", type=int, default=64, help="instances per request (default 64)")
    serve.add_argument("--max-body-bytes", type=int, default=1 << 20, help="request body limit (default 1 MiB)")


def run_serve(args: argparse.Namespace) -> int:
    from nmt.serving import Limits, serve

    for name in ("port", "max_batch_size", "max_request_rows", "max_body_bytes"):
        if getattr(args, name) < (0 if name == "port" else 1):
            raise NmtError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    limits = Limits(
        max_batch_size=args.max_batch_size, max_wait_ms=args.max_wait_ms, batching=not args.no_batching,
        max_request_rows=args.max_request_rows, max_body_bytes=args.max_body_bytes,
    )
    mounts = None
    if args.mount:
        mounts = {}
        for item in args.mount:
            if "=" not in item:
                raise NmtError(f"--mount {item!r}: expected SERVER_PATH=LOCAL_FOLDER, e.g. /serve=serve")
            prefix, folder = item.split("=", 1)
            mounts[prefix] = folder
    serve(args.config, args.host, args.port, limits, mounts)
    return 0
