"""The loaded models: one :class:`Servable` per model version, and the :class:`ModelRegistry` of all
of them that finds the one a request asks for (by name and version, or by task)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from starlette.requests import Request

from nmt import signatures
from nmt.serving.batching import Arrays, Batcher
from nmt.serving.config import Limits, ModelEntry, versions_to_serve
from nmt.serving.http_guard import RequestError
from nmt.signatures import ServingRecord

log = logging.getLogger(__name__)


def read_record(path: Path) -> ServingRecord | None:
    """The export's side file (what each signature is for), or None for a SavedModel that nmt did
    not write: TF Serving's API serves it all the same."""
    record = path / signatures.RECORD_FILE
    return ServingRecord.from_json(record.read_text(encoding="utf-8")) if record.is_file() else None


class Servable:
    """One version of one exported model: its signatures, their input specs and batchers."""

    def __init__(self, name: str, version: int, path: Path, limits: Limits) -> None:
        import tensorflow as tf
        import tensorflow_text  # noqa: F401 - registers the SentencePiece ops the graph uses

        self.name, self.version, self.path = name, version, path
        self.loaded = tf.saved_model.load(str(path))
        self.signatures = dict(self.loaded.signatures)
        self.record = read_record(path)
        self.signature_defs = _signature_defs(path)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{name}-{version}")
        self.limits = limits
        self.batchers: dict[str, Batcher] = {}

    @property
    def task(self) -> str | None:
        """signatures.TRANSLATION or signatures.LANGUAGE_MODEL; None for a foreign SavedModel."""
        return self.record.task if self.record is not None else None

    def input_specs(self, signature: str) -> dict[str, Any]:
        return self.function(signature).structured_input_signature[1]

    def function(self, signature: str) -> Any:
        if signature not in self.signatures:
            raise RequestError(
                f"Serving signature name: \"{signature}\" not found in signature def; available: "
                f"{', '.join(sorted(self.signatures))}"
            )
        return self.signatures[signature]

    def _runner(self, signature: str) -> Callable[[Arrays], Arrays]:
        import tensorflow as tf

        function = self.function(signature)

        def run(inputs: Arrays) -> Arrays:
            outputs = function(**{k: tf.constant(v) for k, v in inputs.items()})
            return {k: v.numpy() for k, v in outputs.items()}

        return run

    async def predict(self, signature: str, inputs: Arrays) -> Arrays:
        if signature not in self.batchers:
            self.batchers[signature] = Batcher(self._runner(signature), self.executor, self.limits)
        outputs = await self.batchers[signature](inputs)
        # A request's answer has its own shape, whatever it was batched with.
        if signatures.K in inputs:
            width = int(inputs[signatures.K].max())
            outputs = {key: value[:, :width] if value.ndim == 2 else value for key, value in outputs.items()}
        if signatures.IDS in outputs and signatures.LENGTHS in outputs:
            longest = max(1, int(outputs[signatures.LENGTHS].max(initial=1)))
            outputs = {**outputs, signatures.IDS: outputs[signatures.IDS][:, :longest]}
        return outputs

    def status(self) -> dict[str, Any]:
        return {"version": str(self.version), "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}


def _signature_defs(path: Path) -> dict[str, Any]:
    """The SignatureDefs as TF Serving's metadata call returns them (protobuf JSON)."""
    from google.protobuf import json_format
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel.FromString((path / "saved_model.pb").read_bytes())
    defs = saved.meta_graphs[0].signature_def
    return {key: json_format.MessageToDict(defs[key]) for key in sorted(defs) if not key.startswith("__")}


class ModelRegistry:
    """Every model of ``models.config`` that loaded; load failures are kept, logged and reported."""

    def __init__(self, entries: list[ModelEntry], limits: Limits) -> None:
        self.limits = limits
        self.models: dict[str, dict[int, Servable]] = {}
        self.failures: dict[str, str] = {}
        for entry in entries:
            self._load(entry)
        for name, reason in self.failures.items():
            log.warning("model %s not served: %s", name, reason)

    def _load(self, entry: ModelEntry) -> None:
        versions = versions_to_serve(entry)
        if not versions:
            self.failures[entry.name] = f"no version found under {entry.base_path}"
        for version in versions:
            path = entry.base_path / str(version)
            try:
                servable = Servable(entry.name, version, path, self.limits)
            except Exception as error:  # noqa: BLE001 - one broken model must not stop the others
                self.failures[entry.name] = f"version {version} at {path}: {error}"
                continue
            self.models.setdefault(entry.name, {})[version] = servable

    def latest(self) -> Iterator[Servable]:
        """The newest version of each model, in the config's order."""
        return (versions[max(versions)] for versions in self.models.values())

    def get(self, name: str, version: int | None = None) -> Servable:
        if name not in self.models:
            why = f" ({self.failures[name]})" if name in self.failures else ""
            raise RequestError(f"Servable not found for request: Latest({name}){why}", 404)
        versions = self.models[name]
        if version is None:
            return versions[max(versions)]
        if version not in versions:
            raise RequestError(f"Servable not found for request: Specific({name}, {version})", 404)
        return versions[version]

    def first(self, name: str | None = None) -> Servable:
        """The named model, or the first language model served, or else the first model."""
        if name is not None:
            return self.get(name)
        latest = list(self.latest())
        return next((s for s in latest if s.task == signatures.LANGUAGE_MODEL), latest[0])

    def of_task(self, task: str, name: str | None) -> Servable:
        """The named model, which must do ``task``, or the first model that does."""
        what = signatures.TASK_DESCRIPTIONS.get(task, task)
        if name is not None:
            servable = self.get(name)
            if servable.task != task:
                raise RequestError(f"model {name} is not a {what}")
            return servable
        found = next((s for s in self.latest() if s.task == task), None)
        if found is None:
            raise RequestError(f"no {what} is served", 404)
        return found

    def batching_stats(self) -> dict[str, dict[str, int]]:
        """Model calls and the rows they carried, per ``name/version/signature``."""
        return {f"{name}/{version}/{signature}": batcher.stats
                for name, versions in self.models.items()
                for version, servable in versions.items()
                for signature, batcher in servable.batchers.items()}


def registry_of(request: Request) -> ModelRegistry:
    """FastAPI dependency: the registry the app serves (create_app keeps it in app.state)."""
    return request.app.state.registry
