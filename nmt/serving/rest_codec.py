"""TF Serving's REST JSON for :predict: the row (``"instances"``) and columnar (``"inputs"``)
request formats into input arrays of the graph's types, and outputs into the matching response
(``"predictions"`` or ``"outputs"``), as ``tensorflow_model_server`` shapes them."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import numpy as np

from nmt.serving.errors import RequestError

INT32_MAX = 2**31 - 1
FLOAT32_MAX = float(np.finfo(np.float32).max)
ROW, COLUMNAR = "instances", "inputs"
B64 = "b64"  # {"b64": "..."}: binary string values, in requests and in outputs named *_bytes
BINARY_SUFFIX = "_bytes"


def as_array(value: Any, spec: Any, name: str) -> np.ndarray:
    """A JSON value -> an array of the input's dtype (TF Serving's JSON mapping), or a RequestError
    (400) saying why: numbers outside the graph's type would otherwise wrap around or become inf.
    NaN and Infinity are floats' values, as TF Serving accepts them. The rank is the JSON's: the
    graph judges it, as in TF Serving (rank-1 instances to half_plus_two's [-1, 1] ``x``)."""
    if spec.dtype.name not in JSON_TYPES:
        raise RequestError(f"input {name}: unsupported dtype {spec.dtype.name}")
    try:
        is_string = spec.dtype.name == "string"
        array = _strings(value) if is_string else _numbers(value, np.dtype(spec.dtype.as_numpy_dtype))
    except (ValueError, TypeError, OverflowError) as error:
        raise RequestError(f"input {name}: {error}, got {json.dumps(value)[:100]}") from None
    return array


# TF Serving's JSON mapping: the graph types a JSON value can be given in, by TensorSpec dtype name.
JSON_TYPES = frozenset({"bool", "string", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64",
                        "float16", "float32", "float64"})


def is_b64(value: Any) -> bool:
    """``{"b64": "..."}``: TF Serving's JSON for a binary string."""
    return isinstance(value, dict) and set(value) == {B64} and isinstance(value[B64], str)


def string_bytes(value: Any) -> bytes:
    """A JSON string (UTF-8) or ``{"b64": ...}`` (base64) -> its bytes; ValueError saying why not."""
    if isinstance(value, str):
        return value.encode("utf-8")
    if is_b64(value):
        try:
            return base64.b64decode(value[B64], validate=True)
        except binascii.Error:
            raise ValueError("\"b64\" must be base64") from None
    raise ValueError("expected strings (or {\"b64\": base64} for bytes)")


def _strings(value: Any) -> np.ndarray:
    def convert(v: Any) -> Any:
        return [convert(x) for x in v] if isinstance(v, list) else string_bytes(v)

    converted = convert(value)
    try:
        array = np.empty(np.shape(converted), dtype=object)
        array[...] = converted
    except ValueError:
        raise ValueError("nested lists must be rectangular") from None
    return array


def _numbers(value: Any, dtype: np.dtype) -> np.ndarray:
    array = np.array(value)
    if array.dtype == object or array.dtype.kind not in "iufb":
        raise ValueError(f"expected {dtype.name} values")
    if dtype.kind == "b":
        if array.size and array.dtype.kind != "b":
            raise ValueError("expected true or false")
        return array.astype(bool)
    if array.dtype.kind == "b":
        raise ValueError(f"expected numbers ({dtype.name}), got true/false")
    if dtype.kind in "iu":
        if array.dtype.kind == "f":
            raise ValueError(f"expected integers ({dtype.name})")
        info = np.iinfo(dtype)
        if array.size and (int(array.min()) < info.min or int(array.max()) > info.max):
            raise ValueError(f"integers out of the {dtype.name} range")
        return array.astype(dtype)
    finite = array.astype(np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size and np.abs(finite).max() > np.finfo(dtype).max:
        raise ValueError(f"numbers outside the {dtype.name} range")
    return array.astype(dtype)


def parse_predict_body(body: Any, specs: dict[str, Any]) -> tuple[dict[str, np.ndarray], str]:
    """A :predict body -> input arrays and its format (ROW or COLUMNAR)."""
    if not isinstance(body, dict):
        raise RequestError("JSON Value: must be an object with \"instances\" or \"inputs\"")
    if (ROW in body) == (COLUMNAR in body):
        raise RequestError("JSON object must have exactly one of \"instances\" (row format) or \"inputs\" "
                           "(columnar format)")
    names = sorted(specs)
    if not names:
        # A signature without inputs (TF Serving's counter model). TF Serving's REST refuses
        # these ("Failed to get input map"); here the columnar format's empty object calls them.
        if body.get(COLUMNAR) != {}:
            raise RequestError("this signature takes no inputs: send {\"inputs\": {}}")
        return {}, COLUMNAR
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


def to_json(value: np.ndarray, name: str = "") -> Any:
    """An output array as JSON values: strings decoded from UTF-8, or {"b64": ...} when the
    output's name ends in _bytes (TF Serving's rule for binary outputs)."""
    if value.dtype == object:
        if name.endswith(BINARY_SUFFIX):
            return _map_strings(value, lambda b: {B64: base64.b64encode(b).decode("ascii")})
        return _map_strings(value, lambda b: b.decode("utf-8", "replace"))
    return value.tolist()


def _map_strings(value: np.ndarray, convert: Any) -> Any:
    if value.ndim == 0:
        return convert(value[()])
    return [_map_strings(v, convert) if isinstance(v, np.ndarray) else convert(v) for v in value]


def format_predictions(outputs: dict[str, np.ndarray], kind: str) -> dict[str, Any]:
    """TF Serving's response: row format {"predictions": [...]}, columnar {"outputs": ...}."""
    columns = {k: to_json(v, k) for k, v in outputs.items()}
    if kind == COLUMNAR:
        return {"outputs": next(iter(columns.values())) if len(columns) == 1 else columns}
    if len(columns) == 1:
        return {"predictions": next(iter(columns.values()))}
    rows = len(next(iter(columns.values())))
    return {"predictions": [{k: v[i] for k, v in columns.items()} for i in range(rows)]}
