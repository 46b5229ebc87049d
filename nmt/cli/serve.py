"""``nmt serve``: exported models over HTTP with TensorFlow Serving's REST API. The options and
their checks are :mod:`nmt.serving.options`' (they import nothing heavy)."""

from __future__ import annotations

import argparse

from nmt.serving.options import add_serve_arguments, run_serve


def add_parser(subparsers) -> argparse.ArgumentParser:
    serve = subparsers.add_parser(
        "serve",
        help="serve exported models (or any SavedModel) with TensorFlow Serving's REST and gRPC APIs",
        description="Loads every model of a TF Serving models.config (a ModelServerConfig text proto; absolute "
        "base paths under /serve are found in the config file's folder, as serve/docker-compose.yml mounts it) "
        "and answers TF Serving's REST calls: GET /v1/models/NAME[/versions/V|/labels/L][/metadata], "
        "POST /v1/models/NAME[/versions/V|/labels/L]:predict with 'instances' or 'inputs', :classify and "
        ":regress with 'examples'; with --grpc-port, its gRPC services too. Any SavedModel is served (TF2, or a "
        "TF1 graph with signatures). Also POST /v1/translate, /v1/next-word, /v1/generate, /v1/inspect, "
        "GET /healthz, the OpenAPI page at /docs and a demo page at / (next words as you type, hidden states, "
        "attention maps). Concurrent requests are batched (up to --max-batch-size rows, waiting at most "
        "--max-wait-ms). A model that fails to load is reported and the others are served; with --poll-seconds, "
        "new version folders are served without a restart. For tensorflow_model_server's own flags, use "
        "nmt-model-server.",
        epilog="examples:\n  nmt serve --config serve/models.config --port 8501\n"
        "  nmt serve --config serve/models.config --grpc-port 8500 --poll-seconds 1 --metrics-path /metrics\n"
        "  curl -d '{\"instances\": [\"I love eating\"]}' localhost:8501/v1/models/lm-en:predict\n"
        "  curl -d '{\"text\": [\"Good morning.\"], \"beam\": 5}' localhost:8501/v1/translate",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_serve_arguments(serve)
    serve.set_defaults(func=run)
    return serve


def run(args: argparse.Namespace) -> int:
    return run_serve(args)  # checks the options, then imports TensorFlow
