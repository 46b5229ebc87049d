"""``nmt-model-server``: ``tensorflow_model_server``'s command line over ``nmt serve``'s server
(the same :class:`~nmt.serving.config.ServerSettings` and :func:`~nmt.cli.serve.run_server`).

The flags have TF Serving's names and meanings (``--port`` is gRPC, ``--rest_api_port`` REST, 0
turns it off; ``--flag=value`` and absl's ``--flag`` / ``--noflag`` for booleans), so the command of
a TF Serving deployment (serve/docker-compose.yml's, for one) runs as ``nmt-model-server ...``. One
flag is this server's own: ``--mount SERVER_PATH=LOCAL_FOLDER``, for the absolute paths that
name a container's volume (``/serve``) when the files live elsewhere here.
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

from nmt.cli.serve import check_port, check_seconds, run_server
from nmt.cli.startup import import_tensorflow, setup_logging
from nmt.errors import NmtError
from nmt.serving.config import Access, Limits, Monitoring, ServerSettings, map_path

DEFAULTS = Limits()
TRUE, FALSE = frozenset({"true", "1", "yes"}), frozenset({"false", "0", "no"})


def boolean(text: str) -> bool:
    if text.lower() in TRUE:
        return True
    if text.lower() in FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nmt-model-server",
        description="TensorFlow Serving's model server, in Python: serves any SavedModel (TF2, or TF1 graphs with "
        "predict, classify and regress signatures) over TF Serving's gRPC API (--port) and REST API "
        "(--rest_api_port), with its flags. New version folders are picked up without a restart. nmt's own "
        "endpoints (/v1/translate, /v1/next-word, ..., the demo page at /) are on the REST port too.",
        epilog="examples:\n"
        "  nmt-model-server --rest_api_port=8501 --model_name=en-ja --model_base_path=serve/models/en-ja\n"
        "  nmt-model-server --mount /serve=serve --port=8500 --rest_api_port=8501 \\\n"
        "      --model_config_file=/serve/models.config --model_config_file_poll_wait_seconds=60 \\\n"
        "      --enable_batching=true --batching_parameters_file=/serve/batching_parameters.txt \\\n"
        "      --monitoring_config_file=/serve/monitoring.config      (serve/docker-compose.yml's flags)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    flag = parser.add_argument
    flag("--port", type=int, default=8500, help="gRPC port (default 8500; 0: no gRPC)")
    flag("--rest_api_port", type=int, default=0, help="REST port (default 0: no REST API, as in TF Serving)")
    flag("--rest_api_timeout_in_ms", type=int, default=int(DEFAULTS.request_timeout_s * 1000),
         help="a REST request's model work may take this long (default 30000); past it REST answers 504 "
         "(gRPC calls end at their client's own deadline, as in TF Serving)")
    flag("--model_name", default="default", help="the model's name, with --model_base_path (default 'default')")
    flag("--model_base_path", help="the folder of one model's numbered version folders (instead of "
         "--model_config_file)")
    flag("--model_config_file", help="a ModelServerConfig text proto: several models, version policies, labels")
    flag("--model_config_file_poll_wait_seconds", type=int, default=0,
         help="read --model_config_file again every N seconds (default 0: never)")
    flag("--file_system_poll_wait_seconds", type=int, default=1,
         help="look for new version folders every N seconds (default 1; 0: at start only)")
    flag("--enable_batching", type=boolean, nargs="?", const=True, default=False,
         help="merge concurrent requests of one signature into one model call (default false)")
    flag("--noenable_batching", dest="enable_batching", action="store_false", help=argparse.SUPPRESS)
    flag("--batching_parameters_file", help="a BatchingParameters text proto: max_batch_size and "
         "batch_timeout_micros are used (the thread and queue settings are TF Serving's own)")
    flag("--monitoring_config_file", help="a MonitoringConfig text proto: Prometheus metrics on the REST port at "
         "prometheus_config.path")
    flag("--tensorflow_intra_op_parallelism", type=int, default=0, help="threads within one op (default 0: all cores)")
    flag("--tensorflow_inter_op_parallelism", type=int, default=0, help="ops run at once (default 0: all cores)")
    flag("--host", default="0.0.0.0",
         help="address to bind both ports (default 0.0.0.0, every interface, as TF Serving; 127.0.0.1: this machine "
         "only). Not a TF Serving flag")
    flag("--mount", action="append", default=[], metavar="SERVER_PATH=LOCAL_FOLDER",
         help="where an absolute path of the flags or the model config lives here, like a Docker volume (e.g. "
         "/serve=serve). Not a TF Serving flag")
    return parser


def check_arguments(args: argparse.Namespace) -> dict[str, str]:
    """NmtError for a bad flag; returns the --mount mapping."""
    check_port("--port", args.port)
    check_port("--rest_api_port", args.rest_api_port)
    if not args.port and not args.rest_api_port:
        raise NmtError("--port and --rest_api_port are both 0: nothing to serve on")
    if args.port and args.port == args.rest_api_port:
        raise NmtError(f"--port and --rest_api_port are both {args.port}; gRPC and REST need their own ports")
    if bool(args.model_config_file) == bool(args.model_base_path):
        raise NmtError("give either --model_config_file or --model_base_path (with --model_name)")
    for name in ("model_config_file_poll_wait_seconds", "file_system_poll_wait_seconds"):
        check_seconds(f"--{name}", getattr(args, name))
    if args.rest_api_timeout_in_ms <= 0:
        raise NmtError(f"--rest_api_timeout_in_ms must be positive, got {args.rest_api_timeout_in_ms}")
    if args.batching_parameters_file and not args.enable_batching:
        raise NmtError("--batching_parameters_file needs --enable_batching")
    if args.monitoring_config_file and not args.rest_api_port:
        raise NmtError("--monitoring_config_file serves metrics on the REST port: give --rest_api_port")
    mounts = {}
    for item in args.mount:
        prefix, sep, folder = item.partition("=")
        if not sep or not prefix.startswith("/"):
            raise NmtError(f"--mount {item!r}: expected SERVER_PATH=LOCAL_FOLDER, e.g. /serve=serve")
        mounts[prefix] = folder
    return mounts


def model_server_settings(args: argparse.Namespace) -> ServerSettings:
    """The server the flags describe (checked first: NmtError for a bad one)."""
    mounts = check_arguments(args)
    from nmt.serving.config import read_batching_parameters, read_model_config, read_monitoring_config, single_model

    def here(path: str) -> Path:
        """A flag's path: an absolute one through --mount, as the container's volume would place it."""
        return map_path(path, Path.cwd(), mounts) if Path(path).is_absolute() else Path(path)

    limits = Limits(batching=args.enable_batching, request_timeout_s=args.rest_api_timeout_in_ms / 1000)
    if args.batching_parameters_file:
        limits = read_batching_parameters(here(args.batching_parameters_file), limits)
    monitoring = read_monitoring_config(here(args.monitoring_config_file)) if args.monitoring_config_file else None
    if args.model_config_file:
        config_file = here(args.model_config_file)
        # No --mount: /serve is the config file's folder (read_model_config's default).
        read_entries = functools.partial(read_model_config, config_file, mounts or None)
        read_entries()  # a bad config is an error before TensorFlow loads
        folder, config_poll_s = config_file.parent, args.model_config_file_poll_wait_seconds
    else:
        read_entries = functools.partial(single_model, args.model_name, here(args.model_base_path))
        folder, config_poll_s = Path.cwd(), 0
    return ServerSettings(
        read_entries=read_entries, limits=limits, host=args.host, rest_port=args.rest_api_port or None,
        grpc_port=args.port or None,
        # TF Serving accepts any Host; so does this command (nmt serve checks it against DNS rebinding).
        access=Access(bind_host=args.host, allowed_hosts=("*",)), monitoring=monitoring or Monitoring(),
        file_system_poll_s=args.file_system_poll_wait_seconds, config_poll_s=config_poll_s, config_folder=folder,
    )


def run(args: argparse.Namespace) -> int:
    settings = model_server_settings(args)
    import_tensorflow()
    import tensorflow as tf

    if args.tensorflow_intra_op_parallelism:
        tf.config.threading.set_intra_op_parallelism_threads(args.tensorflow_intra_op_parallelism)
    if args.tensorflow_inter_op_parallelism:
        tf.config.threading.set_inter_op_parallelism_threads(args.tensorflow_inter_op_parallelism)
    return run_server(settings)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(exclusive=argv is None)
    try:
        return run(args)
    except NmtError as error:
        print(f"nmt-model-server: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
