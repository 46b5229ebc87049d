"""SavedModel export: signatures that take and return strings, SentencePiece inside the graph.

The exported graph holds the model's variables, the SentencePiece models (tensorflow-text's
``SentencepieceTokenizer``, whose ops stock TensorFlow Serving links) and the decoding loops of
:mod:`nmt.decoding` (core ops only), so ``tensorflow_model_server`` serves it as it is. The run's
task chooses the signatures (``nmt.tasks.translation`` / ``nmt.tasks.lm`` document them; every
input has a batch dimension, so TF Serving's REST "instances" format works for all of them) and
says what each is for in a :class:`nmt.signatures.ServingRecord`, which ``nmt serve`` reads.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from nmt import signatures as sig
from nmt.constants import EOS_ID
from nmt.errors import NmtError, as_nmt_error
from nmt.inference import load_members
from nmt.io import is_disk_full
from nmt.layers.recurrent import forced_recurrence_path
from nmt.signatures import MAX_VERSION, RECORD_FILE, WARMUP_FILE, check_export_target
from nmt.tasks import task_for


def next_version(out_dir: Path) -> int:
    """One more than the highest version folder TF Serving would serve there (1 if none)."""
    versions = [int(p.name) for p in out_dir.iterdir() if p.is_dir() and p.name.isascii() and p.name.isdigit()] \
        if out_dir.is_dir() else []
    return max((v for v in versions if v <= MAX_VERSION), default=0) + 1


def export(run_dir: str | Path | Sequence[str | Path], out_dir: str | Path, version: int | None = None,
           weights: str = "best", shortlist: bool | None = None, ensemble_mode: str = "log_probs") -> Path:
    """Writes ``out_dir/<version>/`` (the next free version by default) atomically: the SavedModel
    is written next to it under a hidden name and renamed when complete, so a server watching
    ``out_dir`` never sees half a model. Every graph is traced on the recurrence's loop path, even
    on a GPU: cuDNN's ops would make a SavedModel that no CPU can serve. ``shortlist``: decode over
    the run's vocabulary shortlist, its table a constant of the graph (None: as decode.shortlist says).
    Several runs, or a comma list of ``weights`` (``ckpt-16000,ckpt-17000``), export one ensemble
    (:func:`nmt.inference.load_members`): every member's variables in the one SavedModel, combined
    at each step of the one search as ``ensemble_mode`` says; the first run's config decides the
    decoding. An ensemble has no single encoder to show, so it exports no ``inspect`` signature."""
    runs = [run_dir] if isinstance(run_dir, (str, Path)) else list(run_dir)
    with forced_recurrence_path("loop"):
        return _export(runs, out_dir, version, weights, shortlist, ensemble_mode)


def _export(runs: list[str | Path], out_dir: str | Path, version: int | None, weights: str,
            shortlist: bool | None, ensemble_mode: str) -> Path:
    """:func:`export`, on the loop path."""
    out_dir = Path(out_dir)
    with as_nmt_error():
        check_export_target(out_dir, version)
        version = version if version is not None else next_version(out_dir)
        check_export_target(out_dir, version)  # the next free one may be past int64 too
    final = out_dir / str(version)
    if final.exists():
        raise NmtError(f"{final} exists: TF Serving versions are immutable; choose another --version")
    predictor = load_members(runs, weights, shortlist=shortlist, ensemble_mode=ensemble_mode)
    task = task_for(predictor.config)
    staging = out_dir / f".tmp-{version}-{os.getpid()}"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
        task.export_archive(predictor).write_out(str(staging), verbose=False)
        # What `nmt serve` needs to know beyond the signatures (TF Serving ignores assets.extra).
        record = staging / RECORD_FILE
        record.parent.mkdir(exist_ok=True)
        record.write_text(task.serving_record(predictor).to_json(), encoding="utf-8")
        write_warmup(staging)
        os.replace(staging, final)
    except (tf.errors.ResourceExhaustedError, OSError) as error:
        # TensorFlow's writers report a full disk as ResourceExhaustedError, Python's as ENOSPC.
        if not is_disk_full(error):
            raise
        raise NmtError(f"no space left on device while writing {final}; free some space and export again") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


# What a warm-up request feeds each input of nmt's signatures, by name: one short row, so that a
# server's first real request does not pay for the graph's first run (TF Serving and nmt serve
# replay the file on load, before the version is AVAILABLE).
WARMUP_TEXT = "Hello, world."
FIRST_PIECE_ID = EOS_ID + 1  # the first id after the reserved ones: a piece in every vocabulary
WARMUP_VALUES = {sig.TEXT: WARMUP_TEXT.encode(), sig.TARGET: WARMUP_TEXT.encode(), sig.IDS: [FIRST_PIECE_ID],
                 sig.CONSTRAINTS: b"", sig.AVOID: b"",
                 sig.LENGTHS: 1, sig.K: sig.DEFAULT_K,
                 sig.MAX_TOKENS: 4, sig.TEMPERATURE: sig.DEFAULT_TEMPERATURE, sig.TOP_K: sig.DEFAULT_TOP_K,
                 sig.TOP_P: sig.DEFAULT_TOP_P, sig.SEED: 0}


def warmup_requests(saved_model: Path) -> list[Any]:
    """A PredictRequest per serving signature of the SavedModel at ``saved_model`` (one row each)."""
    from tensorflow.core.protobuf import saved_model_pb2
    from tensorflow_serving.apis import predict_pb2

    proto = saved_model_pb2.SavedModel.FromString((saved_model / "saved_model.pb").read_bytes())
    graph = next(g for g in proto.meta_graphs if "serve" in g.meta_info_def.tags)
    requests = []
    for key in sorted(graph.signature_def):
        if key.startswith("__"):
            continue  # TensorFlow's own (__saved_model_init_op)
        request = predict_pb2.PredictRequest()
        request.model_spec.signature_name = key
        for name, info in graph.signature_def[key].inputs.items():
            if name not in WARMUP_VALUES:
                raise NmtError(f"signature {key}: no warm-up value for input {name!r} (nmt.export.WARMUP_VALUES)")
            rank = len(info.tensor_shape.dim) if not info.tensor_shape.unknown_rank else 1
            value = np.array(WARMUP_VALUES[name], dtype=object if info.dtype == tf.string.as_datatype_enum
                             else tf.dtypes.as_dtype(info.dtype).as_numpy_dtype)
            request.inputs[name].CopyFrom(tf.make_tensor_proto(value.reshape([1] * rank)))
        requests.append(request)
    return requests


def write_warmup(saved_model: Path) -> None:
    """``assets.extra/tf_serving_warmup_requests``: TF Serving's warm-up file (PredictionLogs)."""
    from tensorflow_serving.apis import prediction_log_pb2

    path = saved_model / WARMUP_FILE
    path.parent.mkdir(exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for request in warmup_requests(saved_model):
            writer.write(prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)).SerializeToString())
