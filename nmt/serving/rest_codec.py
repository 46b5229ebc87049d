"""TF Serving's REST JSON for :predict: the row (``"instances"``) and columnar (``"inputs"``)
request formats into input arrays of the graph's types, and outputs into the matching response
(``"predictions"`` or ``"outputs"``), as ``tensorflow_model_server`` shapes them."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from nmt.serving.config import Limits
from nmt.serving.http_guard import RequestError

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
FLOAT32_MAX = float(np.finfo(np.float32).max)
# The graph input types a JSON value can be given in (by the name of the TensorSpec's dtype).
DTYPES: dict[str, Any] = {"string": object, "int32": np.int32, "int64": np.int64, "float32": np.float32}
ROW, COLUMNAR = "instances", "inputs"


def as_array(value: Any, spec: Any, name: str) -> np.ndarray:
    """A JSON value -> an array of the input's dtype and rank, or a RequestError (400) saying why:
    numbers outside the graph's type would otherwise wrap around or become inf."""
    dtype = DTYPES.get(spec.dtype.name)
    if dtype is None:
        raise RequestError(f"input {name}: unsupported dtype {spec.dtype.name}")
    try:
        array = _strings(value) if dtype is object else _numbers(value, dtype)
    except (ValueError, TypeError, OverflowError) as error:
        raise RequestError(f"input {name}: {error}, got {json.dumps(value)[:100]}") from None
    expected_rank = len(spec.shape)
    if array.ndim != expected_rank:
        raise RequestError(f"input {name}: expected a tensor of rank {expected_rank}, got rank {array.ndim}")
    return array


def _strings(value: Any) -> np.ndarray:
    array = np.array(value, dtype=object)
    if array.size and not all(isinstance(v, str) for v in array.flat):
        raise ValueError("expected strings")
    return np.vectorize(lambda s: s.encode("utf-8"), otypes=[object])(array) if array.size else array


def _numbers(value: Any, dtype: Any) -> np.ndarray:
    array = np.array(value)
    is_float = dtype == np.float32
    if array.dtype == object or array.dtype.kind not in "iufb" or (not is_float and array.dtype.kind == "f"):
        raise ValueError(f"expected {'numbers' if is_float else 'integers'}")
    if not is_float and array.size and (array.min() < np.iinfo(dtype).min or array.max() > np.iinfo(dtype).max):
        raise ValueError(f"integers out of the {np.dtype(dtype).name} range")
    if is_float and array.size and not (np.abs(array.astype(np.float64)) <= FLOAT32_MAX).all():
        raise ValueError("numbers must be finite and within the float32 range")
    return array.astype(dtype)


def parse_predict_body(body: Any, specs: dict[str, Any]) -> tuple[dict[str, np.ndarray], str]:
    """A :predict body -> input arrays and its format (ROW or COLUMNAR)."""
    if not isinstance(body, dict):
        raise RequestError("JSON Value: must be an object with \"instances\" or \"inputs\"")
    if (ROW in body) == (COLUMNAR in body):
        raise RequestError("JSON object must have exactly one of \"instances\" (row format) or \"inputs\" "
                           "(columnar format)")
    names = sorted(specs)
    if ROW in body:
        columns = _row_columns(body[ROW], names)
        return {name: as_array(columns[name], specs[name], name) for name in names}, ROW
    inputs = body[COLUMNAR]
    if len(names) == 1 and not (isinstance(inputs, dict) and set(inputs) == set(names)):
        inputs = {names[0]: inputs}  # a lone input may be given bare
    if not isinstance(inputs, dict) or set(inputs) != set(names):
        raise RequestError(f"\"inputs\" must name exactly the inputs {', '.join(names)}")
    arrays = {name: as_array(inputs[name], specs[name], name) for name in names}
    rows = {len(a) for a in arrays.values() if a.ndim}
    if len(rows) > 1:
        raise RequestError("inputs have different batch sizes")
    if rows == {0}:
        raise RequestError("inputs are empty: nothing to predict")
    return arrays, COLUMNAR


def _row_columns(instances: Any, names: list[str]) -> dict[str, list[Any]]:
    """The row format's instances -> one list of values per input name."""
    if not isinstance(instances, list):
        raise RequestError("\"instances\" must be a list")
    if not instances:
        raise RequestError("\"instances\" is empty: nothing to predict")
    if len(names) == 1 and not (isinstance(instances[0], dict) and set(instances[0]) == set(names)):
        return {names[0]: instances}  # a lone input: instances are its values themselves
    if not all(isinstance(i, dict) for i in instances):
        raise RequestError(f"each instance must be an object with the inputs {', '.join(names)}")
    for name in names:
        if any(name not in i for i in instances):
            raise RequestError(f"every instance needs input {name!r} (inputs: {', '.join(names)})")
    unknown = {k for i in instances for k in i} - set(names)
    if unknown:
        raise RequestError(f"unknown input(s) {', '.join(sorted(unknown))}; inputs: {', '.join(names)}")
    return {name: [i[name] for i in instances] for name in names}


def check_request_size(arrays: dict[str, np.ndarray], limits: Limits) -> None:
    """The server's limits on one request: rows, token ids per row, characters per text."""
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


def to_json(value: np.ndarray) -> Any:
    """An output array as JSON values (strings decoded from UTF-8)."""
    if value.dtype == object and value.size:
        return np.vectorize(lambda b: b.decode("utf-8", "replace"), otypes=[object])(value).tolist()
    return value.tolist()


def format_predictions(outputs: dict[str, np.ndarray], kind: str) -> dict[str, Any]:
    """TF Serving's response: row format {"predictions": [...]}, columnar {"outputs": ...}."""
    if kind == COLUMNAR:
        if len(outputs) == 1:
            return {"outputs": to_json(next(iter(outputs.values())))}
        return {"outputs": {k: to_json(v) for k, v in outputs.items()}}
    columns = {k: to_json(v) for k, v in outputs.items()}
    if len(columns) == 1:
        return {"predictions": next(iter(columns.values()))}
    rows = len(next(iter(columns.values())))
    return {"predictions": [{k: v[i] for k, v in columns.items()} for i in range(rows)]}
