"""``nmt serve``: TensorFlow Serving's REST API over exported SavedModels, on a laptop, no Docker.

It reads the same ``models.config`` as ``tensorflow_model_server`` (a ``ModelServerConfig`` text
proto: names, base paths, version policies) and answers the same REST calls with the same JSON
(``GET /v1/models/{name}[/versions/{v}]``, ``POST .../{name}[/versions/{v}]:predict`` in the row
``instances`` and the columnar ``inputs`` formats, errors as ``{"error": "..."}``), so a client
written against one works against the other. It adds ``/v1/translate``, ``/v1/next-word``,
``/v1/generate``, ``/v1/inspect``, ``/healthz``, an OpenAPI page at ``/docs`` and a demo page at ``/``.

Concurrent requests for one signature are batched: calls wait up to ``max_wait_ms`` for others and
run as one batch of at most ``max_batch_size`` rows, one model call at a time per model version
(TensorFlow uses every core for a call), so throughput grows with load.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, Field, ValidationError
from starlette.requests import ClientDisconnect

from nmt.errors import NmtError
from nmt.http_guard import Access, AccessGuard, RequestError, parse_json_body, request_timeout_protocol

log = logging.getLogger(__name__)

DEMO_PAGE = Path(__file__).parent / "static" / "demo.html"
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
FLOAT32_MAX = float(np.finfo(np.float32).max)


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


# --- models.config ---------------------------------------------------------------------------


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
    entries = []
    for config in message.model_config_list.config:
        if not config.name or not config.base_path:
            raise NmtError(f"{path}: every model needs a name and a base_path")
        if config.model_platform not in ("", "tensorflow"):
            raise NmtError(f"{path}: model {config.name}: platform {config.model_platform!r} is not served")
        base = _map_path(config.base_path, path.parent, mounts)
        policy = config.model_version_policy.WhichOneof("policy_choice") or "latest"
        if policy == "latest":
            versions = [config.model_version_policy.latest.num_versions or 1]
        elif policy == "specific":
            versions = list(config.model_version_policy.specific.versions)
        else:
            versions = []
        entries.append(ModelEntry(config.name, base, policy, versions))
    if not entries:
        raise NmtError(f"{path}: model_config_list has no models")
    return entries


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
    found = sorted(int(p.name) for p in entry.base_path.iterdir() if p.is_dir() and p.name.isdigit()) \
        if entry.base_path.is_dir() else []
    if entry.policy == "latest":
        return found[-entry.versions[0]:] if found else []
    if entry.policy == "specific":
        return [v for v in entry.versions if v in found]
    return found


# --- batching ------------------------------------------------------------------------------


class Batcher:
    """Merges concurrent calls of one signature into batches along the first axis.

    While the model is busy, arriving calls wait and join the next batch (up to ``max_batch_size``
    rows); when it is idle, a call waits at most ``max_wait_ms`` for company. So batches grow with
    the load, and a lone request pays at most the wait.
    """

    def __init__(self, run: Any, executor: ThreadPoolExecutor, limits: Limits) -> None:
        self.run, self.executor, self.limits = run, executor, limits
        self.pending: list[tuple[dict[str, np.ndarray], asyncio.Future]] = []
        self.timer: asyncio.TimerHandle | None = None
        self.in_flight = 0  # batches handed to the model and not finished
        self.running: set[asyncio.Task] = set()  # referenced until done (asyncio keeps weak refs)
        self.stats = {"batches": 0, "rows": 0}

    def _call_model(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import tensorflow as tf

        try:
            return self.run(inputs)
        except tf.errors.InvalidArgumentError as error:
            raise RequestError(f"invalid argument: {graph_error_summary(error.message)}") from None

    async def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        loop = asyncio.get_running_loop()
        if not self.limits.batching:
            self.stats["batches"] += 1
            self.stats["rows"] += _rows(inputs)
            return await loop.run_in_executor(self.executor, self._call_model, inputs)
        future: asyncio.Future = loop.create_future()
        self.pending.append((inputs, future))
        self._schedule()
        return await future

    def _pending_rows(self) -> int:
        return sum(_rows(i) for i, _ in self.pending)

    def _schedule(self) -> None:
        while self.pending and self._pending_rows() >= self.limits.max_batch_size:
            self._dispatch()
        if self.pending and not self.in_flight and self.timer is None:
            self.timer = asyncio.get_running_loop().call_later(self.limits.max_wait_ms / 1000, self._on_timer)

    def _on_timer(self) -> None:
        self.timer = None
        if self.pending and not self.in_flight:
            self._dispatch()
        # Otherwise the batch in flight dispatches the waiting calls when it finishes.

    def _dispatch(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        batch, rows = [], 0
        while self.pending and (not batch or rows + _rows(self.pending[0][0]) <= self.limits.max_batch_size):
            item = self.pending.pop(0)
            batch.append(item)
            rows += _rows(item[0])
        self.in_flight += 1
        task = asyncio.ensure_future(self._run(batch))
        self.running.add(task)
        task.add_done_callback(self.running.discard)

    async def _run(self, batch: list[tuple[dict[str, np.ndarray], asyncio.Future]]) -> None:
        try:
            await self._answer(batch)
        finally:
            self.in_flight -= 1
            if self.pending and not self.in_flight:
                self._dispatch()  # these calls waited through a whole model call already
            self._schedule()

    async def _answer(self, batch: list[tuple[dict[str, np.ndarray], asyncio.Future]]) -> None:
        try:
            merged = {key: np.concatenate([_pad_to(i[key], batch, key) for i, _ in batch]) for key in batch[0][0]}
            self.stats["batches"] += 1
            self.stats["rows"] += _rows(merged)
            outputs = await asyncio.get_running_loop().run_in_executor(self.executor, self._call_model, merged)
        except RequestError as error:
            if len(batch) > 1:  # one request's bad input must not fail the others: run them alone
                for inputs, future in batch:
                    await self._run_alone(inputs, future)
                return
            failure: Exception = error
        except Exception as error:  # noqa: BLE001 - every waiting request gets an answer
            failure = RequestError(f"model error: {type(error).__name__}", 500)
        else:
            start = 0
            for inputs, future in batch:
                n = _rows(inputs)
                if not future.done():  # its client may be gone
                    future.set_result({k: v[start : start + n] for k, v in outputs.items()})
                start += n
            return
        for _, future in batch:
            if not future.done():
                future.set_exception(failure)

    async def _run_alone(self, inputs: dict[str, np.ndarray], future: asyncio.Future) -> None:
        try:
            result = await asyncio.get_running_loop().run_in_executor(self.executor, self._call_model, inputs)
        except Exception as error:  # noqa: BLE001
            if not future.done():
                future.set_exception(error if isinstance(error, RequestError) else RequestError("model error", 500))
            return
        if not future.done():
            future.set_result(result)


def graph_error_summary(message: str) -> str:
    """The line of a TensorFlow error that says what is wrong (an assertion's message), not its
    "Graph execution error:" heading or node trace."""
    lines = [line.strip() for line in message.splitlines()]
    useful = [line for line in lines if line and not line.startswith(("Graph execution error", "Detected at node",
                                                                      "<stack traces", "[[{{node"))]
    chosen = next((line for line in useful if "assertion failed" in line), useful[0] if useful else message)
    return chosen[:300]


def _rows(inputs: dict[str, np.ndarray]) -> int:
    return len(next(iter(inputs.values())))


def _pad_to(array: np.ndarray, batch: list, key: str) -> np.ndarray:
    """2-D inputs (token ids) of different widths are zero-padded to the widest in the batch."""
    if array.ndim < 2:
        return array
    width = max(i[key].shape[1] for i, _ in batch)
    return np.pad(array, [(0, 0), (0, width - array.shape[1])])


# --- loaded models -------------------------------------------------------------------------


class Servable:
    """One version of one exported model: its signatures, their input specs and batchers."""

    def __init__(self, name: str, version: int, path: Path, limits: Limits) -> None:
        import tensorflow as tf
        import tensorflow_text  # noqa: F401 - registers the SentencePiece ops the graph uses

        self.name, self.version, self.path = name, version, path
        self.loaded = tf.saved_model.load(str(path))
        self.signatures = dict(self.loaded.signatures)
        info = path / "assets.extra" / "nmt.json"
        self.info = json.loads(info.read_text(encoding="utf-8")) if info.is_file() else {}
        self.signature_defs = _signature_defs(path)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{name}-{version}")
        self.limits = limits
        self.batchers: dict[Any, Batcher] = {}
        self.lock = threading.Lock()

    def input_specs(self, signature: str) -> dict[str, Any]:
        return self.function(signature).structured_input_signature[1]

    def function(self, signature: str) -> Any:
        if signature not in self.signatures:
            raise RequestError(
                f"Serving signature name: \"{signature}\" not found in signature def; available: "
                f"{', '.join(sorted(self.signatures))}"
            )
        return self.signatures[signature]

    def _runner(self, signature: str):
        import tensorflow as tf

        function = self.function(signature)

        def run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            outputs = function(**{k: tf.constant(v) for k, v in inputs.items()})
            return {k: v.numpy() for k, v in outputs.items()}

        return run

    async def predict(self, signature: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if signature not in self.batchers:
            self.batchers[signature] = Batcher(self._runner(signature), self.executor, self.limits)
        outputs = await self.batchers[signature](inputs)
        # A request's answer has its own shape, whatever it was batched with.
        if "k" in inputs:
            width = int(inputs["k"].max())
            outputs = {key: value[:, :width] if value.ndim == 2 else value for key, value in outputs.items()}
        if "ids" in outputs and "lengths" in outputs:
            outputs = {**outputs, "ids": outputs["ids"][:, : max(1, int(outputs["lengths"].max(initial=1)))]}
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
    """Every model of ``models.config`` that loaded; load failures are kept and reported."""

    def __init__(self, entries: list[ModelEntry], limits: Limits) -> None:
        self.limits = limits
        self.models: dict[str, dict[int, Servable]] = {}
        self.failures: dict[str, str] = {}
        for entry in entries:
            versions = versions_to_serve(entry)
            if not versions:
                self.failures[entry.name] = f"no version found under {entry.base_path}"
                continue
            for version in versions:
                try:
                    servable = Servable(entry.name, version, entry.base_path / str(version), limits)
                except Exception as error:  # noqa: BLE001 - one broken model must not stop the others
                    self.failures[entry.name] = f"version {version} at {entry.base_path / str(version)}: {error}"
                    continue
                self.models.setdefault(entry.name, {})[version] = servable

    def get(self, name: str, version: int | None = None) -> Servable:
        if name not in self.models:
            if name in self.failures:
                raise RequestError(f"Servable not found for request: Latest({name}) ({self.failures[name]})", 404)
            raise RequestError(f"Servable not found for request: Latest({name})", 404)
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
        latest = [versions[max(versions)] for versions in self.models.values()]
        return next((s for s in latest if s.info.get("task") == "lm"), latest[0])

    def of_task(self, task: str, name: str | None) -> Servable:
        if name is not None:
            servable = self.get(name)
            if servable.info.get("task") != task:
                raise RequestError(f"model {name} is not a {'language model' if task == 'lm' else 'translation model'}")
            return servable
        for versions in self.models.values():
            servable = versions[max(versions)]
            if servable.info.get("task") == task:
                return servable
        raise RequestError(f"no {'language model' if task == 'lm' else 'translation model'} is served", 404)


# --- TF Serving's JSON formats ---------------------------------------------------------------


def _as_array(value: Any, spec: Any, name: str) -> np.ndarray:
    import tensorflow as tf

    dtype = {tf.string: object, tf.int32: np.int32, tf.int64: np.int64, tf.float32: np.float32}.get(spec.dtype)
    if dtype is None:
        raise RequestError(f"input {name}: unsupported dtype {spec.dtype.name}")
    try:
        if dtype is object:
            array = np.array(value, dtype=object)
            if array.size and not all(isinstance(v, str) for v in array.flat):
                raise ValueError("expected strings")
            array = np.vectorize(lambda s: s.encode("utf-8"), otypes=[object])(array) if array.size else array
        else:
            array = np.array(value)
            if array.dtype == object or array.dtype.kind not in "iufb" or (dtype != np.float32 and array.dtype.kind == "f"):
                raise ValueError(f"expected {'numbers' if dtype == np.float32 else 'integers'}")
            if dtype != np.float32 and array.size and (array.min() < np.iinfo(dtype).min or array.max() > np.iinfo(dtype).max):
                raise ValueError(f"integers out of the {np.dtype(dtype).name} range")
            if dtype == np.float32 and array.size and not (np.abs(array.astype(np.float64)) <= FLOAT32_MAX).all():
                raise ValueError("numbers must be finite and within the float32 range")
            array = array.astype(dtype)
    except (ValueError, TypeError, OverflowError) as error:
        raise RequestError(f"input {name}: {error}, got {json.dumps(value)[:100]}") from None
    expected_rank = len(spec.shape)
    if array.ndim != expected_rank:
        raise RequestError(f"input {name}: expected a tensor of rank {expected_rank}, got rank {array.ndim}")
    return array


def parse_predict_body(body: Any, specs: dict[str, Any]) -> tuple[dict[str, np.ndarray], str]:
    """A :predict body -> input arrays and its format ("instances" or "inputs")."""
    if not isinstance(body, dict):
        raise RequestError("JSON Value: must be an object with \"instances\" or \"inputs\"")
    if ("instances" in body) == ("inputs" in body):
        raise RequestError("JSON object must have exactly one of \"instances\" (row format) or \"inputs\" (columnar format)")
    names = sorted(specs)
    if "instances" in body:
        instances = body["instances"]
        if not isinstance(instances, list):
            raise RequestError("\"instances\" must be a list")
        if not instances:
            raise RequestError("\"instances\" is empty: nothing to predict")
        if len(names) == 1 and not (isinstance(instances[0], dict) and set(instances[0]) == set(names)):
            columns = {names[0]: instances}
        else:
            if not all(isinstance(i, dict) for i in instances):
                raise RequestError(f"each instance must be an object with the inputs {', '.join(names)}")
            columns = {}
            for name in names:
                if any(name not in i for i in instances):
                    raise RequestError(f"every instance needs input {name!r} (inputs: {', '.join(names)})")
                columns[name] = [i[name] for i in instances]
            unknown = {k for i in instances for k in i} - set(names)
            if unknown:
                raise RequestError(f"unknown input(s) {', '.join(sorted(unknown))}; inputs: {', '.join(names)}")
        arrays = {name: _as_array(columns[name], specs[name], name) for name in names}
        return arrays, "instances"
    inputs = body["inputs"]
    if len(names) == 1 and not (isinstance(inputs, dict) and set(inputs) == set(names)):
        inputs = {names[0]: inputs}
    if not isinstance(inputs, dict) or set(inputs) != set(names):
        raise RequestError(f"\"inputs\" must name exactly the inputs {', '.join(names)}")
    arrays = {name: _as_array(inputs[name], specs[name], name) for name in names}
    rows = {len(a) for a in arrays.values() if a.ndim}
    if len(rows) > 1:
        raise RequestError("inputs have different batch sizes")
    if rows == {0}:
        raise RequestError("inputs are empty: nothing to predict")
    return arrays, "inputs"


def _to_json(value: np.ndarray) -> Any:
    if value.dtype == object:
        return np.vectorize(lambda b: b.decode("utf-8", "replace"), otypes=[object])(value).tolist() if value.size else value.tolist()
    return value.tolist()


def format_predictions(outputs: dict[str, np.ndarray], kind: str) -> dict[str, Any]:
    """TF Serving's response: row format {"predictions": [...]}, columnar {"outputs": ...}."""
    if kind == "inputs":
        if len(outputs) == 1:
            return {"outputs": _to_json(next(iter(outputs.values())))}
        return {"outputs": {k: _to_json(v) for k, v in outputs.items()}}
    columns = {k: _to_json(v) for k, v in outputs.items()}
    if len(columns) == 1:
        return {"predictions": next(iter(columns.values()))}
    rows = len(next(iter(columns.values())))
    return {"predictions": [{k: v[i] for k, v in columns.items()} for i in range(rows)]}


# --- the HTTP application -------------------------------------------------------------------


class TranslateRequest(BaseModel):
    text: str | list[str] = Field(description="a sentence or a list of sentences")
    beam: int | None = Field(None, description="beam size: 1 (greedy) or the model's (default)")
    attention: bool = Field(False, description="also return each translation's attention map (source and "
                            "output pieces, weights [output][source]); with the model's beam only")
    model: str | None = Field(None, description="model name (default: the first translation model)")


class InspectRequest(BaseModel):
    text: str | list[str] = Field(description="a text or a list of texts")
    model: str | None = Field(None, description="model name (default: the first language model, else the first "
                              "translation model)")


class NextWordRequest(BaseModel):
    text: str | list[str] = Field(description="the text so far, or a list of texts")
    k: int = Field(5, description="how many next words")
    model: str | None = None


class GenerateRequest(BaseModel):
    text: str | list[str] = Field("", description="prompt(s) to continue")
    max_tokens: int = 100
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0
    model: str | None = None


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI description of a JSON request body (the endpoints read the body themselves)."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}}}


def create_app(registry: ModelRegistry, access: Access | None = None) -> FastAPI:
    limits = registry.limits
    app = FastAPI(
        title="nmt serve",
        description="TensorFlow Serving's REST API (predict, model status) over nmt's exported SavedModels, "
        "plus /v1/translate (with attention maps), /v1/next-word, /v1/generate, /v1/inspect (hidden states) "
        "and a demo page at /.",
        version="1",
    )

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.exception_handler(RequestError)
    async def on_request_error(request: Request, exc: RequestError) -> JSONResponse:
        answer = error(exc.status, exc.message)
        if exc.close:  # the rest of the body is not read: the connection cannot carry another request
            answer.headers["connection"] = "close"
        return answer

    @app.exception_handler(RequestValidationError)
    async def on_invalid_body(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Malformed JSON, wrong types, missing fields: TF Serving's 400 shape, not FastAPI's 422.
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'body'}: {e.get('msg', 'invalid')}" for e in exc.errors()
        )
        return error(400, f"invalid request: {problems}")

    app.add_middleware(AccessGuard, access=access or Access(), max_body_bytes=limits.max_body_bytes)

    async def read_json(request: Request) -> Any:
        raw = bytearray()
        try:
            async with asyncio.timeout(limits.body_timeout_s):
                async for chunk in request.stream():
                    raw += chunk
                    if len(raw) > limits.max_body_bytes:
                        raise RequestError(f"request body is over the limit of {limits.max_body_bytes} bytes", 413,
                                           close=True)
        except TimeoutError:
            raise RequestError(f"request body not received within {limits.body_timeout_s:g} s "
                               f"({len(raw)} bytes came)", 408, close=True) from None
        except ClientDisconnect:
            # One line, not a traceback: a client that gives up is no server error.
            client = f"{request.client.host}:{request.client.port}" if request.client else "a client"
            log.warning("%s disconnected after %d bytes of the request body to %s", client, len(raw), request.url.path)
            raise RequestError("client disconnected", 400, close=True) from None
        return parse_json_body(bytes(raw))

    def check_rows(arrays: dict[str, np.ndarray]) -> None:
        rows = max((len(a) for a in arrays.values() if a.ndim), default=1)
        if rows > limits.max_request_rows:
            raise RequestError(f"batch of {rows} is over the limit of {limits.max_request_rows} per request")
        for name, array in arrays.items():
            if array.ndim == 2 and array.shape[1] > limits.max_text_chars:
                raise RequestError(f"input {name}: {array.shape[1]} tokens is over the limit of {limits.max_text_chars}")
            if array.dtype == object:
                longest = max((len(s.decode("utf-8")) for s in array.flat), default=0)
                if longest > limits.max_text_chars:
                    raise RequestError(f"input {name}: a text is over the limit of {limits.max_text_chars} characters")

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {
            "status": "ok",
            "models": {name: sorted(versions) for name, versions in registry.models.items()},
            "tasks": {name: versions[max(versions)].info.get("task") for name, versions in registry.models.items()},
            "failed": registry.failures,
            # Model calls and the rows they carried, per signature: rows / batches is the mean batch.
            "batching": {
                f"{name}/{version}/{signature}": batcher.stats
                for name, versions in registry.models.items()
                for version, servable in versions.items()
                for signature, batcher in servable.batchers.items()
            },
        }

    @app.get("/v1/models/{rest:path}")
    async def model_status(rest: str) -> Any:
        parts = rest.split("/")
        metadata = parts[-1] == "metadata"
        if metadata:
            parts = parts[:-1]
        name, version = _name_version(parts)
        if version is None and not metadata:
            if name not in registry.models:
                registry.get(name)  # raises the 404
            return {"model_version_status": [s.status() for s in registry.models[name].values()]}
        servable = registry.get(name, version)
        if not metadata:
            return {"model_version_status": [servable.status()]}
        return {
            "model_spec": {"name": name, "signature_name": "", "version": str(servable.version)},
            "metadata": {"signature_def": {
                "signature_def": servable.signature_defs,
                "@type": "type.googleapis.com/tensorflow.serving.SignatureDefMap",
            }},
        }

    @app.post("/v1/models/{rest:path}")
    async def predict(rest: str, request: Request) -> Any:
        if not rest.endswith(":predict"):
            verb = rest.rsplit(":", 1)[-1] if ":" in rest else ""
            raise RequestError(f"unsupported method {verb!r}: this server implements :predict", 404 if not verb else 400)
        name, version = _name_version(rest[: -len(":predict")].split("/"))
        servable = registry.get(name, version)
        body = await read_json(request)
        signature = body.get("signature_name", "serving_default") if isinstance(body, dict) else "serving_default"
        if not isinstance(signature, str):
            raise RequestError("signature_name must be a string")
        signature = signature or "serving_default"
        arrays, kind = parse_predict_body(body, servable.input_specs(signature))
        check_rows(arrays)
        return format_predictions(await servable.predict(signature, arrays), kind)

    async def read_model(http: Request, model: type[BaseModel]) -> Any:
        # The JSON body whatever its Content-Type (curl -d sends a form type, as clients of TF
        # Serving are used to), validated into the request model.
        try:
            return model.model_validate(await read_json(http))
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors())
            raise RequestError(f"invalid request: {problems}") from None

    def texts_of(text: str | list[str]) -> list[str]:
        texts = [text] if isinstance(text, str) else text
        if not texts:
            raise RequestError("\"text\" is empty: nothing to do")
        if len(texts) > limits.max_request_rows:
            raise RequestError(f"batch of {len(texts)} is over the limit of {limits.max_request_rows} per request")
        for t in texts:
            if len(t) > limits.max_text_chars:
                raise RequestError(f"a text of {len(t)} characters is over the limit of {limits.max_text_chars}")
        return texts

    def strings(texts: list[str]) -> np.ndarray:
        return np.array([t.encode("utf-8") for t in texts], dtype=object)

    @app.post("/v1/translate", openapi_extra=json_body(TranslateRequest))
    async def translate(http: Request) -> dict[str, Any]:
        request = await read_model(http, TranslateRequest)
        servable = registry.of_task("translation", request.model)
        texts = texts_of(request.text)
        beams = {1: "translate_greedy", servable.info.get("beam_size", 0): "translate"}
        beam = request.beam if request.beam is not None else servable.info.get("beam_size", 1)
        if beam not in beams:
            raise RequestError(f"beam {beam} is not exported; this model has {' and '.join(map(str, sorted(beams)))}")
        signature = beams[beam]
        if request.attention:
            if beam != servable.info.get("beam_size"):
                raise RequestError(f"attention maps are exported for the model's beam {servable.info.get('beam_size')}"
                                   f" only, not beam {beam}")
            signature = "translate_attention"
            servable.function(signature)  # an export from before attention maps: a clear 400
        out = await servable.predict(signature, {"text": strings(texts)})
        answer = {"model": servable.name, "version": servable.version, "beam": beam,
                  "translations": _to_json(out["translations"]), "scores": out["scores"].tolist()}
        if request.attention:
            answer["attention"] = [
                {"source_tokens": _to_json(source[:n_source]), "target_tokens": _to_json(target[:n_target]),
                 "weights": np.round(weights[:n_target, :n_source], 4).tolist()}
                for source, n_source, target, n_target, weights in zip(
                    out["source_tokens"], out["source_lengths"], out["target_tokens"], out["target_lengths"],
                    out["attention"])
            ]
        return answer

    @app.post("/v1/inspect", openapi_extra=json_body(InspectRequest))
    async def inspect(http: Request) -> dict[str, Any]:
        """Per text, the pieces read and the hidden state after each: its units, L2 norm and
        change from the previous piece; a language model adds its 5 likeliest next pieces."""
        request = await read_model(http, InspectRequest)
        servable = registry.first(request.model)
        texts = texts_of(request.text)
        servable.function("inspect")  # an export from before `inspect`: a clear 400
        from nmt.inference import Trace  # norms and changes, computed as `nmt inspect` does

        out = await servable.predict("inspect", {"text": strings(texts)})
        results = []
        for row, n in enumerate(out["lengths"]):
            trace = Trace(_to_json(out["tokens"][row, :n]), out["states"][row, :n].astype(np.float64), [])
            result = {"tokens": trace.tokens, "states": np.round(trace.states, 4).tolist(),
                      "norms": np.round(trace.norms, 4).tolist(), "changes": np.round(trace.changes, 4).tolist()}
            if "top_tokens" in out:
                result["predictions"] = [
                    [{"token": t, "probability": round(float(p), 4)} for t, p in zip(tokens, probabilities)]
                    for tokens, probabilities in zip(_to_json(out["top_tokens"][row, :n]), out["top_probabilities"][row, :n])
                ]
            results.append(result)
        return {"model": servable.name, "version": servable.version, "task": servable.info.get("task"),
                "units": int(out["states"].shape[-1]), "results": results}

    @app.get("/", include_in_schema=False)
    async def demo_page() -> HTMLResponse:
        """The demo page: static HTML and JavaScript over the JSON endpoints above."""
        return HTMLResponse(DEMO_PAGE.read_text(encoding="utf-8"))

    @app.post("/v1/next-word", openapi_extra=json_body(NextWordRequest))
    async def next_word(http: Request) -> dict[str, Any]:
        request = await read_model(http, NextWordRequest)
        servable = registry.of_task("lm", request.model)
        texts = texts_of(request.text)
        max_k = servable.info.get("max_k", 20)
        if not 1 <= request.k <= max_k:
            raise RequestError(f"k must be between 1 and {max_k}, got {request.k}")
        out = await servable.predict("next_words", {"text": strings(texts), "k": np.full(len(texts), request.k, np.int32)})
        words = [
            [{"word": w, "probability": float(p)} for w, p in zip(row_w, row_p) if w][: request.k]
            for row_w, row_p in zip(_to_json(out["words"]), out["probabilities"])
        ]
        return {"model": servable.name, "version": servable.version, "next_words": words}

    @app.post("/v1/generate", openapi_extra=json_body(GenerateRequest))
    async def generate(http: Request) -> dict[str, Any]:
        request = await read_model(http, GenerateRequest)
        servable = registry.of_task("lm", request.model)
        texts = texts_of(request.text)
        if not 1 <= request.max_tokens <= 2000:
            raise RequestError(f"max_tokens must be between 1 and 2000, got {request.max_tokens}")
        # Each number in the type the graph takes it in: float32 (finite), int32.
        if not 0 <= request.temperature <= FLOAT32_MAX:
            raise RequestError(f"temperature must be a finite number >= 0 (float32), got {request.temperature}")
        if not 0 < request.top_p <= 1:
            raise RequestError(f"top_p must be in (0, 1], got {request.top_p}")
        if not 0 <= request.top_k <= INT32_MAX:
            raise RequestError(f"top_k must be between 0 (all) and {INT32_MAX}, got {request.top_k}")
        if not 0 <= request.seed <= INT32_MAX:
            raise RequestError(f"seed must be between 0 and {INT32_MAX}, got {request.seed}")
        n = len(texts)
        inputs = {
            "text": strings(texts), "max_tokens": np.full(n, request.max_tokens, np.int32),
            "temperature": np.full(n, request.temperature, np.float32), "top_k": np.full(n, request.top_k, np.int32),
            "top_p": np.full(n, request.top_p, np.float32), "seed": np.full(n, request.seed, np.int32),
        }
        out = await servable.predict("generate", inputs)
        return {"model": servable.name, "version": servable.version, "text": _to_json(out["text"])}

    return app


def _name_version(parts: list[str]) -> tuple[str, int | None]:
    if len(parts) == 1 and parts[0]:
        return parts[0], None
    if len(parts) == 3 and parts[1] == "versions":
        if not parts[2].isdigit():
            raise RequestError(f"version must be a number, got {parts[2]!r}")
        return parts[0], int(parts[2])
    raise RequestError("expected /v1/models/{name} or /v1/models/{name}/versions/{version}", 404)


def serve(config_path: str | Path, host: str, port: int, limits: Limits, mounts: dict[str, str] | None = None,
          access: Access | None = None) -> None:
    import uvicorn

    entries = read_model_config(config_path, mounts)
    registry = ModelRegistry(entries, limits)
    for name, versions in registry.models.items():
        print(f"serving {name} versions {sorted(versions)}", file=sys.stderr)
    for name, reason in registry.failures.items():
        print(f"warning: model {name} not served: {reason}", file=sys.stderr)
    if not registry.models:
        raise NmtError(f"{config_path}: no model could be loaded")
    access = access or Access(bind_host=host)
    uvicorn.run(create_app(registry, access), host=host, port=port, log_level="warning",
                http=request_timeout_protocol(limits.body_timeout_s),
                # Connections (and requests in progress) past the limit are answered 503.
                limit_concurrency=limits.max_connections)
