"""The loaded models: one :class:`Servable` per model version, and the :class:`ModelRegistry` of all
of them that finds the one a request asks for (by name and version or label, or by task), keeps
each model's versions in step with its base path and its version policy (new version folders are
loaded, then old ones dropped: no request fails during the switch) and reports each version's
state as TF Serving's GetModelStatus does."""

from __future__ import annotations

import dataclasses
import functools
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
from nmt.errors import NmtError
from nmt.serving import tf_examples
from nmt.serving.batching import Arrays, Batcher
from nmt.serving.config import Limits, ModelEntry, version_folders, versions_to_serve
from nmt.serving.errors import RequestError
from nmt.serving.saved_model import SessionModel, replay_warmup
from nmt.signatures import ServingRecord

log = logging.getLogger(__name__)


def read_record(path: Path) -> ServingRecord | None:
    """The export's side file (what each signature is for), or None for a SavedModel that nmt did
    not write: TF Serving's API serves it all the same."""
    record = path / signatures.RECORD_FILE
    return ServingRecord.from_json(record.read_text(encoding="utf-8")) if record.is_file() else None


class Servable:
    """One version of one SavedModel, loaded session-style as TF Serving loads it (see
    :mod:`nmt.serving.saved_model`): its signatures, their input specs, method names and batchers."""

    def __init__(self, name: str, version: int, path: Path, limits: Limits) -> None:
        self.name, self.version, self.path = name, version, path
        self.model = SessionModel(path)
        self.signatures = self.model.signature_defs  # the protos: gRPC's metadata call answers them
        self.signatures_json = _signatures_json(self.signatures)  # and as JSON, for REST's
        self.record = read_record(path)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{name}-{version}")
        self.limits = limits
        self.batchers: dict[str, Batcher] = {}
        self.warmup_requests = replay_warmup(self.model, self._examples_now)

    @property
    def task(self) -> str | None:
        """signatures.TRANSLATION or signatures.LANGUAGE_MODEL; None for a foreign SavedModel."""
        return self.record.task if self.record is not None else None

    def input_specs(self, signature: str) -> dict[str, Any]:
        self.check_signature(signature)
        return self.model.input_specs(signature)

    def method(self, signature: str) -> str:
        """The signature's method name (tensorflow/serving/predict, classify or regress)."""
        self.check_signature(signature)
        return self.model.method(signature) or tf_examples.PREDICT_METHOD

    def check_signature(self, signature: str) -> None:
        if signature not in self.signatures:
            raise RequestError(
                f"Serving signature name: \"{signature}\" not found in signature def; available: "
                f"{', '.join(sorted(self.signatures))}"
            )

    def batcher(self, signature: str) -> Batcher:
        if signature not in self.batchers:
            # nmt's own signatures have a contract (ranks, one batch size); a foreign model's
            # shapes are its graph's to judge, and what cannot be batched runs alone.
            self.batchers[signature] = Batcher(functools.partial(self.model.run, signature), self.executor, self.limits,
                                               pad_ids=self.record is not None)
        return self.batchers[signature]

    async def predict(self, signature: str, inputs: Arrays) -> Arrays:
        """The signature's outputs for ``inputs`` (checked against its inputs), batched with
        concurrent calls of the same signature."""
        specs = self.input_specs(signature)
        check_inputs(inputs, specs, signature)
        if self.record is not None:
            check_contract(inputs, specs, signature)
            try:
                self.record.check_request(inputs)
            except ValueError as error:
                raise RequestError(str(error)) from None
        outputs = await self.batcher(signature)(inputs)
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

    def _check_examples_signature(self, signature: str, method: str) -> None:
        """TF Serving's rule: the method name, and one input keyed "inputs". Its declared dtype is
        not checked (half_plus_three declares float for the serialized Examples it parses)."""
        tf_examples.check_method(signature, self.method(signature), method)
        if list(self.input_specs(signature)) != [tf_examples.EXAMPLES_INPUT]:
            raise RequestError(f"signature {signature!r} must take one input {tf_examples.EXAMPLES_INPUT!r} "
                               "(serialized Examples)")

    def _examples_now(self, signature: str, method: str, serialized: list[bytes]) -> Arrays:
        """An examples call run at once, outside the batcher (the warm-up replay's)."""
        self._check_examples_signature(signature, method)
        return self.model.run(signature, {tf_examples.EXAMPLES_INPUT: np.array(serialized, dtype=object)})

    async def _examples_call(self, signature: str, method: str, serialized: list[bytes]) -> Arrays:
        self._check_examples_signature(signature, method)
        return await self.batcher(signature)({tf_examples.EXAMPLES_INPUT: np.array(serialized, dtype=object)})

    async def classify(self, signature: str, serialized: list[bytes]) -> list[list[tuple[str, float]]]:
        outputs = await self._examples_call(signature, tf_examples.CLASSIFY_METHOD, serialized)
        return tf_examples.classifications(outputs, len(serialized))

    async def regress(self, signature: str, serialized: list[bytes]) -> list[float]:
        outputs = await self._examples_call(signature, tf_examples.REGRESS_METHOD, serialized)
        return tf_examples.regressions(outputs, len(serialized))

def check_input_names(names: set[str], specs: dict[str, Any], signature: str) -> None:
    """The inputs a signature takes, by name (TF Serving's message)."""
    if names != set(specs):
        extra, missing = sorted(names - set(specs)), sorted(set(specs) - names)
        raise RequestError(f"input size does not match signature: {len(names)}!={len(specs)} "
                           f"len({{{','.join(sorted(names))}}}) != len({{{','.join(sorted(specs))}}}). "
                           f"Sent extra: {{{','.join(extra)}}}. Missing but required: {{{','.join(missing)}}}.")


def check_inputs(inputs: Arrays, specs: dict[str, Any], signature: str) -> None:
    """The inputs a signature takes, by name, and of its types (a gRPC request's tensors come
    typed; TF Serving refuses a mismatch rather than casting)."""
    check_input_names(set(inputs), specs, signature)
    for name, array in inputs.items():
        wanted = specs[name].dtype
        is_string = wanted.name == "string"
        if (array.dtype == object) != is_string or (not is_string and array.dtype != wanted.as_numpy_dtype):
            given = "string" if array.dtype == object else array.dtype.name
            raise RequestError(f"input {name}: expects {wanted.name} but {given} is provided")


def check_contract(inputs: Arrays, specs: dict[str, Any], signature: str) -> None:
    """What an nmt export's signatures take beyond their dtypes: each input of its declared rank,
    all of one batch size (a foreign model's shapes are left to its graph, as TF Serving leaves them)."""
    for name, array in inputs.items():
        rank = specs[name].shape.rank
        if rank is not None and array.ndim != rank:
            raise RequestError(f"input {name}: expected a tensor of rank {rank}, got rank {array.ndim}")
    sizes = {name: len(array) for name, array in inputs.items() if array.ndim}
    if len(set(sizes.values())) > 1:
        raise RequestError(f"signature {signature!r}: inputs have different batch sizes "
                           f"({', '.join(f'{name}: {n}' for name, n in sorted(sizes.items()))})")
    if 0 in sizes.values():
        raise RequestError("inputs are empty: nothing to predict")


def _signatures_json(defs: Any) -> dict[str, Any]:
    """The SignatureDefs as TF Serving's REST metadata call writes them: protobuf JSON with the
    protos' own field names, fields at their defaults included."""
    from google.protobuf import json_format

    return {key: json_format.MessageToDict(defs[key], preserving_proto_field_name=True,
                                           always_print_fields_with_no_presence=True) for key in sorted(defs)}


@dataclasses.dataclass
class VersionStatus:
    """A version that is not served: failed to load (``error``), or unloaded (state END, OK)."""

    error: str = ""
    fingerprint: tuple = ()  # the folder as it was when it failed: tried again once it changes

    def as_json(self, version: int) -> dict[str, Any]:
        code = "UNKNOWN" if self.error else "OK"
        return {"version": str(version), "state": "END", "status": {"error_code": code, "error_message": self.error}}


def missing_versions(entry: ModelEntry) -> str:
    """Why a model's policy selects no version: what it asked for and what is there."""
    found = sorted(version_folders(entry.base_path))
    there = f"found: {', '.join(map(str, found))}" if found else "none found"
    if entry.policy == "specific":
        return f"version(s) {', '.join(map(str, entry.versions))} not found under {entry.base_path} ({there})"
    return f"no version found under {entry.base_path}"


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
            self.check_labels()

    def sync(self) -> None:
        """Loads the version folders each policy now selects, then drops the ones it no longer does."""
        with self._lock:
            self._sync()

    def _sync(self) -> None:
        for entry in self.entries.values():
            self._sync_model(entry)

    def _sync_model(self, entry: ModelEntry) -> None:
        served = self.models.get(entry.name, {})
        if served and not entry.base_path.is_dir():
            # TF Serving's rule: a base path that is gone is an error of the poll, not an empty
            # model; what is served stays served until the folder comes back.
            why = f"Could not find base path {entry.base_path} for servable {entry.name}"
            if self.failures.get(entry.name) != why:
                log.warning("%s; still serving versions %s", why, sorted(served))
            self.failures = {**self.failures, entry.name: why}
            return
        wanted = versions_to_serve(entry)
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
        if len(loaded) < len(wanted):
            # A wanted version failed: the versions served so far stay (TF Serving unloads the
            # old only once the new is AVAILABLE), and only the failure shows in the status.
            loaded = {**{v: s for v, s in served.items() if v not in loaded}, **loaded}
        for version in set(served) - set(loaded):
            log.info("model %s version %s unloaded", entry.name, version)
            ended[version] = VersionStatus()
        # Whole mappings replaced: a request holds the old one or the new one, never half of each.
        self.models = {**self.models, entry.name: loaded} if loaded else \
            {n: v for n, v in self.models.items() if n != entry.name}
        self.ended = {**self.ended, entry.name: ended}
        failed = [f"version {v}: {s.error}" for v, s in sorted(ended.items()) if s.error]
        why = missing_versions(entry) if not wanted else "; ".join(failed)
        failures = {n: w for n, w in self.failures.items() if n != entry.name}
        self.failures = {**failures, entry.name: why} if why else failures

    def check_labels(self) -> None:
        """TF Serving's rule: a version label names a version that is being served."""
        for entry in self.entries.values():
            served = self.models.get(entry.name, {})
            for label, version in sorted(entry.labels.items()):
                if version not in served:
                    raise NmtError(f"Request to assign label {label!r} to version {version} of model {entry.name}, "
                                   "which is not currently available for inference")

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

    def named_or_default(self, name: str | None = None) -> Servable:
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
