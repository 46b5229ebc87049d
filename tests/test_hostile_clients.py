"""What a hostile gRPC client found (issue 33, part 3), each kept as a test against a real server
on 127.0.0.1 with batching on: a malformed request fails alone and breaks nothing after it, a bad
request batched with good ones fails alone, inputs that disagree on the batch size are refused,
tensors that are handles, negative, huge or short of their declared bytes are INVALID_ARGUMENT
before anything is allocated, MultiInference keeps TF Serving's rules and the row limit, errors
name no server path, and the task settings are checked as REST checks them."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import inference_pb2, predict_pb2, regression_pb2

from conftest import call
from test_serving_calls import MAX_ROWS, export_models, serving

INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture(scope="module")
def quick(tiny_run, cycle_run, tmp_path_factory: pytest.TempPathFactory):
    with serving(export_models(tmp_path_factory.mktemp("hostile"), tiny_run, cycle_run), 60_000) as server:
        yield server


def predict_request(model: str, signature: str = "", **inputs: tensor_pb2.TensorProto) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = model, signature
    for name, proto in inputs.items():
        request.inputs[name].CopyFrom(proto)
    return request


def texts(*values: str) -> tensor_pb2.TensorProto:
    return tf.make_tensor_proto(np.array([v.encode() for v in values], dtype=object))


def refused(make_call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as failure:
        make_call()
    return failure.value


def test_a_malformed_request_fails_alone_and_the_signature_keeps_serving(quick) -> None:
    server, base, stub = quick
    scalar = tf.make_tensor_proto(np.array(b"I love", dtype=object))  # 0-d: the batcher once kept it
    error = refused(lambda: stub.Predict(predict_request("lm", text=scalar), timeout=30))
    assert error.code() == INVALID and error.details() == "input text: expected a tensor of rank 1, got rank 0"
    unknown_rank = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[1.0],
                                          tensor_shape=tensor_shape_pb2.TensorShapeProto(unknown_rank=True))
    error = refused(lambda: stub.Predict(predict_request("half_plus_two", x=unknown_rank), timeout=30))
    assert error.code() == INVALID and "unknown rank" in error.details()
    for _ in range(2):  # the same signatures answer afterwards, over gRPC and REST
        answer = stub.Predict(predict_request("lm", text=texts("north east")), timeout=30)
        assert tf.make_ndarray(answer.outputs["words"]).shape[0] == 1
        assert call(f"{base}/v1/models/lm:predict", {"instances": ["north east"]})[0] == 200
        x = tf.make_tensor_proto(np.array([[1.0]], np.float32))
        assert tf.make_ndarray(stub.Predict(predict_request("half_plus_two", x=x), timeout=30).outputs["y"]) == [[2.5]]
    assert call(f"{base}/healthz")[0] == 200


def test_a_bad_request_batched_with_good_ones_fails_alone(quick) -> None:
    server, base, stub = quick
    good = [stub.Predict.future(predict_request("en-ja", "translate_greedy", text=texts("I like tea.")), timeout=60)
            for _ in range(6)]
    bad = stub.Predict.future(predict_request("en-ja", "translate_greedy", text=tf.make_tensor_proto(
        np.array([[b"I like tea."]], dtype=object))), timeout=60)
    translations = {tf.make_ndarray(f.result().outputs["translations"])[0] for f in good}
    assert len(translations) == 1  # six answers, all the same translation
    error = refused(bad.result)
    assert error.code() == INVALID and error.details() == "input text: expected a tensor of rank 1, got rank 2"


def test_inputs_that_disagree_on_the_batch_size_are_refused(quick) -> None:
    server, base, stub = quick

    def next_words(values: tuple[str, ...], k: list[int]):
        request = predict_request("lm", "next_words", text=texts(*values),
                                  k=tf.make_tensor_proto(np.array(k, np.int32)))
        return stub.Predict.future(request, timeout=60)

    a, b, c = next_words(("He",), [1, 1]), next_words(("I love", "You are"), [5, 5]), next_words(("She", "We"), [2])
    words = tf.make_ndarray(b.result().outputs["words"])
    assert [sum(1 for w in row if w) for row in words] == [5, 5]
    for future in (a, c):
        error = refused(future.result)
        assert error.code() == INVALID and "inputs have different batch sizes" in error.details()


@pytest.mark.parametrize("proto, message", [
    (tensor_pb2.TensorProto(dtype=types_pb2.DT_VARIANT, tensor_shape=tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=1)])), "input x: dtype DT_VARIANT cannot be sent"),
    (tensor_pb2.TensorProto(dtype=types_pb2.DT_RESOURCE, tensor_shape=tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=1)])), "input x: dtype DT_RESOURCE cannot be sent"),
    (tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[1.0], tensor_shape=tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=2**62)])), "input x: shape [4611686018427387904] declares"),
    (tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[1.0], tensor_shape=tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=-5)])),
     "input x: dimension sizes must be >= 0, got shape [-5]"),
    # 39 bytes on the wire that TensorFlow would fill out to 800 MB.
    (tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[1.0], tensor_shape=tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=n) for n in (1, 1, 200_000_000)])),
     "input x: shape [1, 1, 200000000] declares 800000000 bytes, over the 4194304 a request may carry"),
    (tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_content=b"\0" * 4,
                            tensor_shape=tensor_shape_pb2.TensorShapeProto(
                                dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=3)])),
     "input x: tensor_content holds 4 bytes; shape [3] of float32 needs 12"),
])
def test_tensors_that_cannot_be_data_are_refused_before_allocation(quick, proto, message: str) -> None:
    server, base, stub = quick
    error = refused(lambda: stub.Predict(predict_request("half_plus_two", x=proto), timeout=30))
    assert error.code() == INVALID and error.details().startswith(message), error.details()
    assert call(f"{base}/healthz")[0] == 200


def multi_inference(rows: int, *tasks: tuple[str, str, str]) -> inference_pb2.MultiInferenceRequest:
    request = inference_pb2.MultiInferenceRequest()
    for model, signature, method in tasks:
        task = request.tasks.add()
        task.model_spec.name, task.model_spec.signature_name = model, signature
        task.method_name = f"tensorflow/serving/{method}"
    for i in range(rows):
        request.input.example_list.examples.add().features.feature["x"].float_list.value.append(float(i))
    return request


@pytest.mark.parametrize("request_, code, message", [
    (multi_inference(5000, ("half_plus_two", "regress_x_to_y", "regress")), INVALID,
     f"batch of 5000 is over the limit of {MAX_ROWS} per request"),
    (multi_inference(1, ("half_plus_two", "regress_x_to_y", "regress"), ("lm", "regress_x_to_y", "regress")), INVALID,
     "All ModelSpecs in a MultiInferenceRequest must access the same model name."),
    (multi_inference(1, ("half_plus_two", "regress_x_to_y", "regress"), ("half_plus_two", "regress_x_to_y", "regress")),
     INVALID, "Duplicate evaluation of signature: regress_x_to_y"),
    (multi_inference(1, ("half_plus_two", "regress_x_to_y", "predict")), grpc.StatusCode.UNIMPLEMENTED,
     "Unsupported signature method_name: tensorflow/serving/predict"),
    (multi_inference(1, ("", "regress_x_to_y", "regress")), INVALID, "Found ModelSpec with an empty model name."),
])
def test_multi_inference_keeps_tf_servings_rules_and_the_row_limit(quick, request_, code, message: str) -> None:
    server, base, stub = quick
    error = refused(lambda: stub.MultiInference(request_, timeout=30))
    assert (error.code(), error.details()) == (code, message)


def test_a_graph_error_names_no_server_path(quick) -> None:
    server, base, stub = quick
    request = regression_pb2.RegressionRequest()
    request.model_spec.name, request.model_spec.signature_name = "half_plus_two", "regress_x_to_y"
    request.input.example_list.examples.add().features.feature["z"].float_list.value.append(1.0)  # no "x"
    error = refused(lambda: stub.Regress(request, timeout=30))
    assert error.code() == INVALID and "x" in error.details()
    assert "File \"" not in error.details() and "/" not in error.details().replace("tensorflow/serving", ""), \
        error.details()


@pytest.mark.parametrize("setting, value, message", [
    ("temperature", -1.0, "temperature"), ("top_p", 0.0, "top_p"), ("top_p", 2.0, "top_p"),
    ("top_k", -3, "top_k"), ("max_tokens", -5, "max_tokens"),
])
def test_grpc_generate_settings_are_checked_as_rest_checks_them(quick, setting: str, value, message: str) -> None:
    server, base, stub = quick
    settings = {"max_tokens": 3, "temperature": 1.0, "top_k": 0, "top_p": 1.0, "seed": 1, setting: value}
    dtypes = {"temperature": np.float32, "top_p": np.float32}
    inputs = {name: tf.make_tensor_proto(np.array([v], dtypes.get(name, np.int32))) for name, v in settings.items()}
    error = refused(lambda: stub.Predict(predict_request("lm", "generate", text=texts("north"), **inputs), timeout=30))
    rest_code, rest_body = call(f"{base}/v1/generate", {"text": "north", **settings})
    assert error.code() == INVALID and message in error.details()
    assert rest_code == 400 and message in rest_body["error"]


@pytest.mark.parametrize("k", [0, -1])
def test_grpc_next_words_k_is_checked_as_rest_checks_it(quick, k: int) -> None:
    server, base, stub = quick
    request = predict_request("lm", "next_words", text=texts("north"), k=tf.make_tensor_proto(np.array([k], np.int32)))
    error = refused(lambda: stub.Predict(request, timeout=30))
    rest_code, rest_body = call(f"{base}/v1/next-word", {"text": "north", "k": k})
    assert error.code() == INVALID and "k must be" in error.details()
    assert rest_code == 400 and "k must be" in rest_body["error"]


def test_examples_are_counted_before_they_are_built(quick) -> None:
    """Each example gets a copy of the context: rows are limited before any is built, and the copies
    must fit in what a request may carry (REST and gRPC)."""
    server, base, stub = quick
    body = {"signature_name": "regress_x_to_y", "context": {"x": 1.0}, "examples": [{}] * 100_000}
    code, answer = call(f"{base}/v1/models/half_plus_two:regress", body)
    assert (code, answer) == (400, {"error": f"batch of 100000 is over the limit of {MAX_ROWS} per request"})
    request = regression_pb2.RegressionRequest()
    request.model_spec.name, request.model_spec.signature_name = "half_plus_two", "regress_x_to_y"
    listed = request.input.example_list_with_context
    listed.context.features.feature["pad"].bytes_list.value.append(b"\0" * (5 << 19))  # 2.5 MiB
    listed.examples.add()
    listed.examples.add()
    error = refused(lambda: stub.Regress(request, timeout=30))
    assert error.code() == INVALID and "copied into each of 2 examples comes to" in error.details()


def test_a_request_s_tensors_share_one_byte_budget_and_names_come_first(quick) -> None:
    server, base, stub = quick
    # Inputs the signature does not take are refused before any is turned into an array.
    extra = {f"z{i}": tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[1.0],
                                             tensor_shape=tensor_shape_pb2.TensorShapeProto(
                                                 dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=1 << 20)]))
             for i in range(50)}
    error = refused(lambda: stub.Predict(predict_request("half_plus_two", x=tf.make_tensor_proto(
        np.array([1.0], np.float32)), **extra), timeout=30))
    assert error.code() == INVALID and error.details().startswith("input size does not match signature: 51!=1")
    # Strings count their bytes, the last one repeated out to the shape.
    padded = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=[b"a" * 1000],
                                    tensor_shape=tensor_shape_pb2.TensorShapeProto(
                                        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=3000)]))
    k = tensor_pb2.TensorProto(dtype=types_pb2.DT_INT32, int_val=[5], tensor_shape=tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=400_000)]))
    error = refused(lambda: stub.Predict(predict_request("lm", "next_words", text=padded, k=k), timeout=30))
    assert error.code() == INVALID and "left after its other inputs" in error.details(), error.details()
