"""The loaded models: one :class:`Servable` per model version, and the :class:`ModelRegistry` of all
of them that finds the one a request asks for (by name and version or label, or by task), keeps
each model's versions in step with its base path and its version policy (new version folders are
loaded, then old ones dropped: no request fails during the switch) and reports each version's
state as TF Serving's GetModelStatus does."""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from starlette.requests import Request

from nmt import signatures
from nmt.serving import examples
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
    """One version of one SavedModel (TF2, or TF1 graph and signatures): its signatures, their
    input specs, method names and batchers."""

    def __init__(self, name: str, version: int, path: Path, limits: Limits) -> None:
        import tensorflow as tf
        import tensorflow_text  # noqa: F401 - registers the SentencePiece ops nmt's graphs use

        self.name, self.version, self.path = name, version, path
        self.loaded = tf.saved_model.load(str(path))
        self.signatures = dict(self.loaded.signatures)
        self.record = read_record(path)
        self.signature_def_map = signature_def_map(path)  # the protos, for gRPC's metadata call
        self.signature_defs = _signature_defs(self.signature_def_map)  # and as JSON, for REST's
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{name}-{version}")
        self.limits = limits
        self.batchers: dict[str, Batcher] = {}

    @property
    def task(self) -> str | None:
        """signatures.TRANSLATION or signatures.LANGUAGE_MODEL; None for a foreign SavedModel."""
        return self.record.task if self.record is not None else None

    def input_specs(self, signature: str) -> dict[str, Any]:
        return self.function(signature).structured_input_signature[1]

    def method(self, signature: str) -> str:
        """The signature's method name (tensorflow/serving/predict, classify or regress)."""
        self.function(signature)
        return self.signature_defs.get(signature, {}).get("methodName", examples.PREDICT_METHOD)

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
        specs = self.input_specs(signature)

        def run(inputs: Arrays) -> Arrays:
            outputs = function(**{k: tf.constant(v, dtype=specs[k].dtype) for k, v in inputs.items()})
            return {k: v.numpy() for k, v in outputs.items()}

        return run

    async def predict(self, signature: str, inputs: Arrays) -> Arrays:
        """The signature's outputs for ``inputs`` (checked against its inputs), batched with
        concurrent calls of the same signature."""
        check_inputs(inputs, self.input_specs(signature), signature)
        if signature not in self.batchers:
            self.batchers[signature] = Batcher(self._runner(signature), self.executor, self.limits)
        outputs = await self.batchers[signature](inputs)
        if self.record is None:
            return outputs
        # An nmt export's answer has its own shape, whatever it was batched with.
        if signatures.K in inputs:
            width = int(inputs[signatures.K].max())
            outputs = {key: value[:, :width] if value.ndim == 2 else value for key, value in outputs.items()}
        if signatures.IDS in outputs and signatures.LENGTHS in outputs:
            longest = max(1, int(outputs[signatures.LENGTHS].max(initial=1)))
            outputs = {**outputs, signatures.IDS: outputs[signatures.IDS][:, :longest]}
        return outputs

    async def _examples_call(self, signature: str, method: str, serialized: list[bytes]) -> Arrays:
        examples.check_method(signature, self.method(signature), method)
        specs = self.input_specs(signature)
        if list(specs) != [examples.EXAMPLES_INPUT] or specs[examples.EXAMPLES_INPUT].dtype.name != "string":
            raise RequestError(f"signature {signature!r} must take one string input "
                               f"{examples.EXAMPLES_INPUT!r} (serialized Examples)")
        return await self.predict(signature, {examples.EXAMPLES_INPUT: np.array(serialized, dtype=object)})

    async def classify(self, signature: str, serialized: list[bytes]) -> list[list[tuple[str, float]]]:
        outputs = await self._examples_call(signature, examples.CLASSIFY_METHOD, serialized)
        return examples.classifications(outputs, len(serialized))

    async def regress(self, signature: str, serialized: list[bytes]) -> list[float]:
        outputs = await self._examples_call(signature, examples.REGRESS_METHOD, serialized)
        return examples.regressions(outputs, len(serialized))


def check_inputs(inputs: Arrays, specs: dict[str, Any], signature: str) -> None:
    """The inputs a signature takes, by name, and of its types (a gRPC request's tensors come
    typed; TF Serving refuses a mismatch rather than casting)."""
    if set(inputs) != set(specs):
        missing, extra = sorted(set(specs) - set(inputs)), sorted(set(inputs) - set(specs))
        raise RequestError(f"signature {signature!r} takes the inputs {', '.join(sorted(specs))}"
                           + (f"; missing: {', '.join(missing)}" if missing else "")
                           + (f"; unknown: {', '.join(extra)}" if extra else ""))
    for name, array in inputs.items():
        wanted = specs[name].dtype
        is_string = wanted.name == "string"
        if (array.dtype == object) != is_string or (not is_string and array.dtype != wanted.as_numpy_dtype):
            given = "string" if array.dtype == object else array.dtype.name
            raise RequestError(f"input {name}: expects {wanted.name} but {given} is provided")


def _signature_defs(defs: Any) -> dict[str, Any]:
    """The SignatureDefs as TF Serving's REST metadata call returns them (protobuf JSON)."""
    from google.protobuf import json_format

    return {key: json_format.MessageToDict(defs[key]) for key in sorted(defs)}


def signature_def_map(path: Path) -> dict[str, Any]:
    """The serving meta graph's SignatureDefs by key (the graph tagged "serve", else the first),
    internal ones (``__saved_model_init_op``) left out."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel.FromString((path / "saved_model.pb").read_bytes())
    graphs = list(saved.meta_graphs)
    graph = next((g for g in graphs if "serve" in g.meta_info_def.tags), graphs[0])
    return {key: value for key, value in graph.signature_def.items() if not key.startswith("__")}


@dataclasses.dataclass
class VersionStatus:
    """A version that is not served: failed to load (``error``), or unloaded (state END, OK)."""

    error: str = ""
    fingerprint: tuple = ()  # the folder as it was when it failed: tried again once it changes

    def as_json(self, version: int) -> dict[str, Any]:
        code = "UNKNOWN" if self.error else "OK"
        return {"version": str(version), "state": "END", "status": {"error_code": code, "error_message": self.error}}


def folder_fingerprint(path: Path) -> tuple:
    """Files, bytes and the newest modification time under ``path``: changes while it is written."""
    files = size = newest = 0
    for root, _, names in os.walk(path):
        for name in names:
            try:
                stat = os.stat(os.path.join(root, name))
            except OSError:
                continue
            files, size, newest = files + 1, size + stat.st_size, max(newest, stat.st_mtime_ns)
    return files, size, newest


class ModelRegistry:
    """The models of a model config: the versions each serves, those that failed or were unloaded,
    and its version labels. :meth:`sync` brings them in step with the folders on disk and
    :meth:`set_entries` with a new config; both may run on a polling thread while requests are
    answered: each change replaces a whole mapping, so a request sees the old one or the new one."""

    def __init__(self, entries: list[ModelEntry], limits: Limits,
                 load: Callable[[str, int, Path, Limits], Servable] = Servable) -> None:
        self.limits = limits
        self._load = load
        self._lock = threading.Lock()  # one sync at a time (the polling thread, a reload request)
        self.entries: dict[str, ModelEntry] = {}
        self.models: dict[str, dict[int, Servable]] = {}
        self.ended: dict[str, dict[int, VersionStatus]] = {}
        self.failures: dict[str, str] = {}  # model -> why it serves nothing (or a version failed)
        self.set_entries(entries)

    def set_entries(self, entries: list[ModelEntry]) -> None:
        """Serve these models (a new model config): new ones load, removed ones unload."""
        with self._lock:
            self.entries = {entry.name: entry for entry in entries}
            for name in set(self.models) - set(self.entries):
                log.info("model %s unloaded: no longer in the model config", name)
            self.models = {name: versions for name, versions in self.models.items() if name in self.entries}
            self.failures = {name: why for name, why in self.failures.items() if name in self.entries}
            self._sync()

    def sync(self) -> None:
        """Loads the version folders each policy now selects, then drops the ones it no longer does."""
        with self._lock:
            self._sync()

    def _sync(self) -> None:
        for entry in self.entries.values():
            self._sync_model(entry)

    def _sync_model(self, entry: ModelEntry) -> None:
        wanted = versions_to_serve(entry)
        served = self.models.get(entry.name, {})
        ended = dict(self.ended.get(entry.name, {}))
        loaded = {v: s for v, s in served.items() if v in wanted and s.path == wanted[v]}
        for version, path in wanted.items():
            if version in loaded:
                continue
            fingerprint = folder_fingerprint(path)
            if version in ended and ended[version].error and ended[version].fingerprint == fingerprint:
                continue  # failed as it is now; tried again when its files change
            try:
                loaded[version] = self._load(entry.name, version, path, self.limits)
            except Exception as error:  # noqa: BLE001 - one broken version must not stop the others
                reason = f"{type(error).__name__}: {error}".splitlines()[0][:500]
                log.warning("model %s version %s at %s failed to load: %s", entry.name, version, path, reason)
                ended[version] = VersionStatus(reason, fingerprint)
                continue
            ended.pop(version, None)
            log.info("model %s version %s loaded from %s", entry.name, version, path)
        for version in set(served) - set(loaded):
            log.info("model %s version %s unloaded", entry.name, version)
            ended[version] = VersionStatus()
        # Whole mappings replaced: a request holds the old one or the new one, never half of each.
        self.models = {**self.models, entry.name: loaded} if loaded else \
            {n: v for n, v in self.models.items() if n != entry.name}
        self.ended = {**self.ended, entry.name: ended}
        failed = [f"version {v}: {s.error}" for v, s in sorted(ended.items()) if s.error]
        why = f"no version found under {entry.base_path}" if not wanted else "; ".join(failed)
        failures = {n: w for n, w in self.failures.items() if n != entry.name}
        self.failures = {**failures, entry.name: why} if why else failures

    def latest(self) -> Iterator[Servable]:
        """The newest version of each model, in the config's order."""
        models = self.models
        return (models[name][max(models[name])] for name in self.entries if name in models)

    def resolve(self, name: str, version: int | None = None, label: str | None = None) -> Servable:
        """The servable a request names: the newest version, a version, or a version label."""
        models = self.models
        if name not in models:
            why = f" ({self.failures[name]})" if name in self.failures else ""
            if version is not None:
                raise RequestError(f"Servable not found for request: Specific({name}, {version}){why}", 404)
            raise RequestError(f"Servable not found for request: Latest({name}){why}", 404)
        versions = models[name]
        if label is not None:
            entry = self.entries.get(name)
            if entry is None or label not in entry.labels:
                raise RequestError(f"Unrecognized servable version label: {label}", 404)
            version = entry.labels[label]
        if version is None:
            return versions[max(versions)]
        if version not in versions:
            raise RequestError(f"Servable not found for request: Specific({name}, {version})", 404)
        return versions[version]

    def status(self, name: str, version: int | None = None, label: str | None = None) -> list[dict[str, Any]]:
        """GetModelStatus: every version's state (or one's), AVAILABLE or END with its error."""
        if name not in self.entries:
            raise RequestError(f"Could not find any versions of model {name}", 404)
        if label is not None:
            version = self.resolve(name, label=label).version
        served, ended = self.models.get(name, {}), self.ended.get(name, {})
        states = {v: {"version": str(v), "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
                  for v in served}
        states.update({v: s.as_json(v) for v, s in ended.items() if v not in served})
        if version is not None:
            if version not in states:
                raise RequestError(f"Could not find version {version} of model {name}", 404)
            return [states[version]]
        if not states:
            raise RequestError(f"Could not find any versions of model {name}"
                               + (f" ({self.failures[name]})" if name in self.failures else ""), 404)
        return [states[v] for v in sorted(states, reverse=True)]

    def first(self, name: str | None = None) -> Servable:
        """The named model, or the first language model served, or else the first model."""
        if name is not None:
            return self.resolve(name)
        latest = list(self.latest())
        if not latest:
            raise RequestError("no model is served", 404)
        return next((s for s in latest if s.task == signatures.LANGUAGE_MODEL), latest[0])

    def of_task(self, task: str, name: str | None) -> Servable:
        """The named model, which must do ``task``, or the first model that does."""
        what = signatures.TASK_DESCRIPTIONS.get(task, task)
        if name is not None:
            servable = self.resolve(name)
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
