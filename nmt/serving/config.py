"""What ``nmt serve`` serves and within which limits: the models of a TF Serving ``models.config``
(a ``ModelServerConfig`` text proto), the versions of each its policy selects, TF Serving's batching
and monitoring files, and the server's request limits. No TensorFlow import: the CLI builds
:class:`Limits` before TensorFlow loads."""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nmt.errors import NmtError
from nmt.serving.errors import RequestError
from nmt.signatures import MAX_VERSION

log = logging.getLogger(__name__)

# What a server answers, said once: nmt serve's --help and the OpenAPI page at /docs print it.
SERVED = (
    "TF Serving's REST API over any SavedModel (TF2, or a TF1 graph with signatures): "
    "GET /v1/models/NAME[/versions/V|/labels/L][/metadata], POST /v1/models/NAME[/versions/V|/labels/L]:predict "
    "with 'instances' or 'inputs', :classify and :regress with 'examples'; its gRPC services (PredictionService, "
    "ModelService) on a gRPC port. Also POST /v1/translate (with attention maps), /v1/next-word, /v1/suggest "
    "(a keyboard's: the word being typed completed, else the next words), /v1/generate, /v1/inspect (hidden "
    "states, gradients), GET /healthz, the OpenAPI page at /docs and a demo page at / (a keyboard's suggestions "
    "and next words as you type, hidden states, attention maps)."
)


@dataclasses.dataclass
class Limits:
    max_batch_size: int = 32  # rows per model call (batching)
    max_wait_ms: float = 5.0  # how long a call waits for others to share its batch
    batching: bool = True
    max_request_rows: int = 64  # instances per request
    max_text_chars: int = 2000  # characters per input string
    max_body_bytes: int = 1 << 20
    body_timeout_s: float = 20.0  # a request's headers, and then its body, must arrive within this
    max_connections: int = 100  # open connections (and requests in progress); past it: 503
    request_timeout_s: float = 30.0  # a REST request's model work; past it: 504 (TF Serving's rest_api_timeout_in_ms)

    @property
    def max_message_bytes(self) -> int:
        """The largest gRPC request: as large as a REST body, or gRPC's 4 MiB default if larger."""
        return max(self.max_body_bytes, 4 << 20)

    def check_rows(self, rows: int) -> None:
        """The row limit of one request, whatever its API (one message everywhere)."""
        if rows > self.max_request_rows:
            raise RequestError(f"batch of {rows} is over the limit of {self.max_request_rows} per request")


@dataclasses.dataclass
class ModelEntry:
    name: str
    base_path: Path
    policy: str  # "latest", "all" or "specific"
    versions: list[int]  # latest: how many; specific: which
    labels: dict[str, int] = dataclasses.field(default_factory=dict)  # version_labels: label -> version


def read_model_config(path: str | Path, mounts: dict[str, str] | None = None) -> list[ModelEntry]:
    """Parses a TF Serving ``ModelServerConfig`` text proto.

    TF Serving wants absolute base paths, which name the folder as its container sees it
    (serve/docker-compose.yml mounts serve/ at /serve). ``mounts`` maps such a prefix to a folder
    here, as Docker's volume does: by default ``/serve`` is the config file's own folder, so the
    shipped ``/serve/models/en-ja`` is ``serve/models/en-ja``. A path that exists as it is, is
    used as it is; relative paths are relative to the config file."""
    from tensorflow_serving.config import model_server_config_pb2

    path = Path(path)
    message = read_text_proto(path, model_server_config_pb2.ModelServerConfig(), "model config")
    return entries_of(message, path.parent, mounts, str(path))


def entries_of(message: Any, folder: Path, mounts: dict[str, str] | None, source: str) -> list[ModelEntry]:
    """A ModelServerConfig message -> its models (relative base paths are under ``folder``;
    ``source`` names the file or request in errors)."""
    if message.WhichOneof("config") == "custom_model_config":
        raise NmtError(f"{source}: only model_config_list is supported (custom_model_config is not)")
    entries = [_entry(config, source, folder, mounts) for config in message.model_config_list.config]
    if not entries:
        raise NmtError(f"{source}: model_config_list has no models")
    names = [e.name for e in entries]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise NmtError(f"{source}: model name(s) given twice: {', '.join(twice)}")
    return entries


def read_text_proto(path: Path, message: Any, what: str) -> Any:
    """A protobuf text file parsed into ``message``, or an NmtError naming the file and the line."""
    from google.protobuf import text_format

    if not path.is_file():
        raise NmtError(f"{what} not found: {path}")
    try:
        return text_format.Parse(path.read_text(encoding="utf-8"), message)
    except (text_format.ParseError, UnicodeDecodeError) as error:
        raise NmtError(f"{path}: not a {message.DESCRIPTOR.name} text proto: {error}") from None


def single_model(name: str, base_path: str | Path) -> list[ModelEntry]:
    """``--model_name`` and ``--model_base_path``: one model, its newest version served."""
    if not name:
        raise NmtError("--model_name must not be empty")
    return [ModelEntry(name, Path(base_path), "latest", [1])]


def _entry(config: Any, source: str, folder: Path, mounts: dict[str, str] | None) -> ModelEntry:
    """One ``ModelConfig`` message -> a ModelEntry."""
    if not config.name or not config.base_path:
        raise NmtError(f"{source}: every model needs a name and a base_path")
    if config.model_platform not in ("", "tensorflow"):
        raise NmtError(f"{source}: model {config.name}: platform {config.model_platform!r} is not served")
    policy = config.model_version_policy.WhichOneof("policy_choice") or "latest"
    if policy == "latest":
        versions = [config.model_version_policy.latest.num_versions or 1]
    elif policy == "specific":
        versions = list(config.model_version_policy.specific.versions)
    else:
        versions = []
    labels = dict(config.version_labels)
    return ModelEntry(config.name, map_path(config.base_path, folder, mounts), policy, versions, labels)


def map_path(base_path: str, config_folder: Path, mounts: dict[str, str] | None) -> Path:
    """A path as the server names it -> the folder here (see :func:`read_model_config`)."""
    base = Path(base_path)
    if not base.is_absolute():
        return config_folder / base
    if base.exists():
        return base
    mapping = {"/serve": str(config_folder)} if mounts is None else mounts
    for prefix, folder in mapping.items():
        prefix = prefix.rstrip("/")
        if base_path == prefix or base_path.startswith(prefix + "/"):
            return Path(folder) / base_path[len(prefix) :].lstrip("/")
    return base


_ignored_folders: set[Path] = set()  # logged once each


def version_folders(base_path: Path) -> dict[int, Path]:
    """The version folders under a base path, by version: TF Serving reads a folder's name as an
    int64, so ``00000123`` is version 123 (when two names read the same, the first in name order)
    and ``99999999999999999999`` is no version at all."""
    if not base_path.is_dir():
        return {}
    found: dict[int, Path] = {}
    for folder in sorted(base_path.iterdir()):
        if folder.is_dir() and folder.name.isascii() and folder.name.isdigit():
            if int(folder.name) > MAX_VERSION:
                if folder not in _ignored_folders:
                    _ignored_folders.add(folder)
                    log.warning("ignoring %s: a version number past int64", folder)
                continue
            found.setdefault(int(folder.name), folder)
    return found


def versions_to_serve(entry: ModelEntry) -> dict[int, Path]:
    """The version folders under the entry's base path that its policy selects, by version."""
    found = version_folders(entry.base_path)
    if entry.policy == "latest":
        chosen = sorted(found)[-entry.versions[0]:] if found else []
    elif entry.policy == "specific":
        chosen = [v for v in entry.versions if v in found]
    else:
        chosen = sorted(found)
    return {version: found[version] for version in chosen}


@dataclasses.dataclass
class Monitoring:
    """TF Serving's MonitoringConfig: Prometheus text at ``path`` when ``enabled``."""

    enabled: bool = False
    path: str = "/monitoring/prometheus/metrics"


@dataclasses.dataclass
class Access:
    """Who may call: the Host names accepted (against DNS rebinding) and the browser origins other
    than the server's own that may (CORS); requests without an Origin header are not browsers' and
    are not restricted."""

    bind_host: str = "127.0.0.1"
    allowed_hosts: tuple[str, ...] = ()  # "*": any
    cors_origins: tuple[str, ...] = ()  # "*": any


@dataclasses.dataclass(frozen=True)
class ServerSettings:
    """What a server is made of, as both command lines (``nmt serve``, ``nmt-model-server``)
    build it from their flags; :func:`nmt.serving.app.start` runs it."""

    read_entries: Callable[[], list[ModelEntry]]  # the model config: read at start, and again by config polling
    limits: Limits = dataclasses.field(default_factory=Limits)
    host: str = "127.0.0.1"
    rest_port: int | None = 8501  # None: no REST API; 0: any free port
    grpc_port: int | None = None  # None: no gRPC API; 0: any free port
    access: Access | None = None  # None: Access(bind_host=host)
    monitoring: Monitoring | None = None  # Prometheus metrics on the REST port
    file_system_poll_s: float = 0  # > 0: new version folders are looked for at this interval
    config_poll_s: float = 0  # > 0: read_entries is called again at this interval
    config_folder: Path = Path(".")  # where a reload request's relative base paths are
    mounts: dict[str, str] | None = None  # a reload request's base paths mapped as the config file's (--mount)


def upstream_messages() -> dict[str, type]:
    """BatchingParameters and MonitoringConfig, field for field as in TF Serving's
    session_bundle_config.proto and monitoring_config.proto (the tensorflow-serving-api wheel
    ships only the model-server protos), so their files parse as strictly as TF Serving parses them."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    f = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(
        name="serving_configs.proto", package="tensorflow.serving", syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    batching = proto.message_type.add(name="BatchingParameters")
    wrapped = [("max_batch_size", "Int64Value"), ("batch_timeout_micros", "Int64Value"),
               ("max_enqueued_batches", "Int64Value"), ("num_batch_threads", "Int64Value"),
               ("thread_pool_name", "StringValue")]
    for number, (name, kind) in enumerate(wrapped, start=1):
        batching.field.add(name=name, number=number, type=f.TYPE_MESSAGE, label=f.LABEL_OPTIONAL,
                           type_name=f".google.protobuf.{kind}")
    batching.field.add(name="allowed_batch_sizes", number=6, type=f.TYPE_INT64, label=f.LABEL_REPEATED)
    batching.field.add(name="pad_variable_length_inputs", number=7, type=f.TYPE_BOOL, label=f.LABEL_OPTIONAL)
    for number, (name, kind) in enumerate([("max_execution_batch_size", "Int64Value"),
                                           ("enable_large_batch_splitting", "BoolValue")], start=8):
        batching.field.add(name=name, number=number, type=f.TYPE_MESSAGE, label=f.LABEL_OPTIONAL,
                           type_name=f".google.protobuf.{kind}")
    prometheus = proto.message_type.add(name="PrometheusConfig")
    prometheus.field.add(name="enable", number=1, type=f.TYPE_BOOL, label=f.LABEL_OPTIONAL)
    prometheus.field.add(name="path", number=2, type=f.TYPE_STRING, label=f.LABEL_OPTIONAL)
    monitoring = proto.message_type.add(name="MonitoringConfig")
    monitoring.field.add(name="prometheus_config", number=1, type=f.TYPE_MESSAGE, label=f.LABEL_OPTIONAL,
                         type_name=".tensorflow.serving.PrometheusConfig")
    pool.Add(proto)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"tensorflow.serving.{name}"))
            for name in ("BatchingParameters", "MonitoringConfig")}


BATCHING_FIELDS_USED = frozenset({"max_batch_size", "batch_timeout_micros"})


def read_batching_parameters(path: str | Path, limits: Limits) -> Limits:
    """``limits`` with the batch size and wait of a TF Serving BatchingParameters file (the other
    fields set TF Serving's own scheduler: threads, queues, allowed batch sizes, padding, splitting,
    which this server's one-call-at-a-time batcher has no use for; each set is logged as ignored)."""
    path = Path(path)
    message = read_text_proto(path, upstream_messages()["BatchingParameters"](), "batching parameters file")
    changes: dict[str, Any] = {"batching": True}
    if message.HasField("max_batch_size"):
        if message.max_batch_size.value < 1:
            raise NmtError(f"{path}: max_batch_size must be positive, got {message.max_batch_size.value}")
        changes["max_batch_size"] = int(message.max_batch_size.value)
    if message.HasField("batch_timeout_micros"):
        if message.batch_timeout_micros.value < 0:
            raise NmtError(f"{path}: batch_timeout_micros must be >= 0, got {message.batch_timeout_micros.value}")
        changes["max_wait_ms"] = message.batch_timeout_micros.value / 1000
    # The rest is said once per field, where the file sets it (a proto3 bool set to false leaves no
    # trace in the message: the file's text is read for the names).
    text = re.sub(r"#[^\n]*", "", path.read_text(encoding="utf-8"))
    for field in message.DESCRIPTOR.fields:
        if field.name not in BATCHING_FIELDS_USED and re.search(rf"\b{field.name}\s*[:{{]", text):
            log.warning("%s: %s is ignored (a setting of TF Serving's own batch scheduler; this server runs one "
                        "model call at a time per version, batches up to max_batch_size rows and pads nothing)",
                        path, field.name)
    return dataclasses.replace(limits, **changes)


def read_monitoring_config(path: str | Path) -> Monitoring:
    """A TF Serving MonitoringConfig file."""
    path = Path(path)
    message = read_text_proto(path, upstream_messages()["MonitoringConfig"](), "monitoring config file")
    config = message.prometheus_config
    metrics_path = config.path or Monitoring.path
    if not metrics_path.startswith("/"):
        raise NmtError(f"{path}: prometheus_config.path must start with '/', got {metrics_path!r}")
    return Monitoring(config.enable, metrics_path)
