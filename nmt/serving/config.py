"""What ``nmt serve`` serves and within which limits: the models of a TF Serving ``models.config``
(a ``ModelServerConfig`` text proto), the versions of each its policy selects, and the server's
request limits. No TensorFlow import: the CLI builds :class:`Limits` before TensorFlow loads."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from nmt.errors import NmtError


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


@dataclasses.dataclass
class ModelEntry:
    name: str
    base_path: Path
    policy: str  # "latest", "all" or "specific"
    versions: list[int]  # latest: how many; specific: which


def read_model_config(path: str | Path, mounts: dict[str, str] | None = None) -> list[ModelEntry]:
    """Parses a TF Serving ``ModelServerConfig`` text proto.

    TF Serving wants absolute base paths, which name the folder as its container sees it
    (serve/docker-compose.yml mounts serve/ at /serve). ``mounts`` maps such a prefix to a folder
    here, as Docker's volume does: by default ``/serve`` is the config file's own folder, so the
    shipped ``/serve/models/en-ja`` is ``serve/models/en-ja``. A path that exists as it is, is
    used as it is; relative paths are relative to the config file."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    path = Path(path)
    if not path.is_file():
        raise NmtError(f"model config not found: {path}")
    message = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(path.read_text(encoding="utf-8"), message)
    except (text_format.ParseError, UnicodeDecodeError) as error:
        raise NmtError(f"{path}: not a ModelServerConfig text proto: {error}") from None
    entries = [_entry(config, path, mounts) for config in message.model_config_list.config]
    if not entries:
        raise NmtError(f"{path}: model_config_list has no models")
    return entries


def _entry(config: Any, path: Path, mounts: dict[str, str] | None) -> ModelEntry:
    """One ``ModelConfig`` message of the file at ``path`` -> a ModelEntry."""
    if not config.name or not config.base_path:
        raise NmtError(f"{path}: every model needs a name and a base_path")
    if config.model_platform not in ("", "tensorflow"):
        raise NmtError(f"{path}: model {config.name}: platform {config.model_platform!r} is not served")
    policy = config.model_version_policy.WhichOneof("policy_choice") or "latest"
    if policy == "latest":
        versions = [config.model_version_policy.latest.num_versions or 1]
    elif policy == "specific":
        versions = list(config.model_version_policy.specific.versions)
    else:
        versions = []
    return ModelEntry(config.name, _map_path(config.base_path, path.parent, mounts), policy, versions)


def _map_path(base_path: str, config_folder: Path, mounts: dict[str, str] | None) -> Path:
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


def versions_to_serve(entry: ModelEntry) -> list[int]:
    """The numbered version folders under the entry's base path that its policy selects."""
    found = sorted(int(p.name) for p in entry.base_path.iterdir() if p.is_dir() and p.name.isdigit()) \
        if entry.base_path.is_dir() else []
    if entry.policy == "latest":
        return found[-entry.versions[0]:] if found else []
    if entry.policy == "specific":
        return [v for v in entry.versions if v in found]
    return found
