"""GPU speed: training target tokens/s and beam-5 sentences/s of our model at the peer's shape, in
float32 and mixed_float16, with whole sequences on cuDNN's fused kernel (the "keras" recurrence path:
Keras' LSTM layers on our weights) and on our tf.while_loop (the "loop" path); OpenNMT-tf too when
--peer-venv is given. One command, meant to take under 10 minutes on one GPU (not yet timed on one: the
--cpu-smoke run below takes 2 minutes on 2 CPU cores, most of it start-up, tracing and data preparation):

    python bench/gpu.py --quick                            # 100 training steps a run, 200 sentences
    python bench/gpu.py                                    # 200 steps a run, the 500 dev sentences
    python bench/gpu.py --quick --peer-venv PEER_VENV      # + the peer (its venv needs a GPU TensorFlow 2.13:
                                                           #   pip install "tensorflow==2.13.*", not tensorflow-cpu)
    python bench/gpu.py --quick --cpu-smoke                # end to end on the CPU in a minute or two: a tiny
                                                           #   model on 2,000 pairs (tests/test_gpu_bench.py)
    python bench/gpu.py --paths-only [--cpu-smoke]         # only the recurrence paths' step times (any device)

Runs, each in this process (the recurrence path is chosen when a graph is traced, with
nmt.layers.recurrent.forced_recurrence_path): two shapes, the peer's (bench/throughput.py's
ours_overrides: 8.89M parameters, input feeding, so only the encoder runs on the fused kernel) and
our default decoder without input feeding (8.63M: the decoder's recurrence is fused too), times the
two precisions, times the two paths. Each trains --steps steps on small_parallel_enja (the first
20-step window dropped: tracing), then translates dev.en at beam 5 (64 sentences a batch, after a
warm-up batch; an hour-untrained model decodes longer outputs than a trained one: compare rows with
each other, not with bench/translation_speed.py). Tokenizers are trained once and shared by the runs.
Before the runs, the two paths' logits from the same weights are compared on the device (the max
absolute difference is reported: cuDNN's kernel against our loop), and a forward + backward pass of
each shape (random weights, 64 sentences of 4-16 tokens) is timed on each path, alternating rounds:
the recurrence's own difference, without data loading or the optimizer. This part runs on a CPU too
(--paths-only): it is how the CPU default was chosen.

Prints a table and writes bench/results/gpu.json (--out).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import DATA, QUIET, ROOT, build_peer_vocabularies, ours_overrides, peer_command, peer_rates  # noqa: E402

sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results" / "gpu.json"
SHAPES = {"same-shape": [], "no-input-feeding": ["model.decoder.input_feeding=false"]}
PRECISIONS = ("float32", "mixed_float16")
PATHS = ("keras", "loop")
# --cpu-smoke: a model small enough that every run takes seconds on a CPU.
SMOKE_SHAPE = ["model.embedding_dim=16", "model.encoder.units=16", "model.decoder.units=16",
               "tokenizer.vocab_size=600"]
SMOKE_PAIRS = 2000


def smoke_data(work: Path) -> Path:
    """The first SMOKE_PAIRS training pairs and dev pairs, in a folder laid out as DATA is."""
    folder = work / "smoke-data"
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("train.en", "train.ja", "dev.en", "dev.ja"):
        with open(DATA / name, encoding="utf-8") as lines:
            (folder / name).write_text("".join(line for _, line in zip(range(SMOKE_PAIRS), lines)), encoding="utf-8")
    return folder


def config_for(run_dir: Path, data: Path, steps: int, shape: list[str], precision: str, smoke: bool) -> Any:
    from nmt.config import load_config

    overrides = ours_overrides(steps) + shape + [f"run_dir={run_dir}", f"train.precision={precision}"]
    overrides = [o.replace(str(DATA), str(data)) for o in overrides]
    return load_config(ROOT / "configs" / "small-parallel-enja.yaml", overrides + (SMOKE_SHAPE if smoke else []))


def train(config: Any, path: str, shared: Path | None) -> list[float]:
    """Target tokens/s of each 20-step window but the first. ``shared``: a finished run whose
    tokenizers and token cache this one reuses (same data, same tokenizer config)."""
    from nmt.layers.recurrent import forced_recurrence_path
    from nmt.training import Trainer

    run_dir = Path(config.run_dir)
    if shared is not None:
        for folder in ("spm", "cache"):
            if (shared / folder).is_dir():
                shutil.copytree(shared / folder, run_dir / folder, dirs_exist_ok=True)
    windows: list[float] = []
    with forced_recurrence_path(path):
        trainer = Trainer(config, progress=lambda step, total, values: windows.append(values["tok/s"]))
        trainer.train()
    return windows[1:]


def translate(run_dir: Path, path: str, precision: str, sentences: list[str]) -> tuple[float, float]:
    """Beam-5 sentences/s over ``sentences``, after a warm-up batch (tracing), and the model's
    parameter count (millions)."""
    import keras
    import numpy as np

    import nmt
    from nmt.layers.recurrent import forced_recurrence_path

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(precision)  # the model is built in the run's precision
    try:
        with forced_recurrence_path(path):
            translator = nmt.load(run_dir, "latest")
            translator.translate(sentences[:64], beam_size=5, batch_size=64)
            start = time.perf_counter()
            translator.translate(sentences, beam_size=5, batch_size=64)
            rate = len(sentences) / (time.perf_counter() - start)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    return rate, sum(int(np.prod(v.shape)) for v in translator.model.trainable_variables) / 1e6


def step_times(shape: list[str], rounds: int) -> dict[str, float]:
    """ms per forward + backward pass of the shape's model on each recurrence path (best of
    ``rounds`` alternating rounds of 5 passes), random weights and batch: the paths alone."""
    import numpy as np
    import tensorflow as tf

    from nmt.config import load_config
    from nmt.layers.recurrent import forced_recurrence_path
    from nmt.tasks import task_for

    config = load_config(ROOT / "configs" / "small-parallel-enja.yaml", [*ours_overrides(1), *shape])
    model = task_for(config).build_model(8000, 8000)
    rng = np.random.default_rng(0)
    lengths = rng.integers(4, 17, 64)
    source = np.where(np.arange(16)[None, :] < lengths[:, None], rng.integers(4, 8000, (64, 16)), 0)
    batch = {"source": tf.constant(source, tf.int32), "source_length": tf.constant(lengths, tf.int32),
             "target_in": tf.constant(source, tf.int32)}
    functions = {}
    for path in PATHS:
        with forced_recurrence_path(path):
            @tf.function(autograph=False)
            def step(batch: dict[str, tf.Tensor]) -> tf.Tensor:
                with tf.GradientTape() as tape:
                    loss = tf.reduce_mean(tf.reduce_logsumexp(model(batch, training=True), axis=-1))
                gradients = tape.gradient(loss, model.trainable_variables)
                return loss + tf.add_n([tf.reduce_sum(tf.convert_to_tensor(g)) for g in gradients]) * 0.0

            step(batch).numpy()  # traces on this path
            functions[path] = step
    best = {path: float("inf") for path in PATHS}
    for _ in range(rounds):
        for path, step in functions.items():
            start = time.perf_counter()
            for _ in range(5):
                result = step(batch)
            result.numpy()
            best[path] = min(best[path], (time.perf_counter() - start) / 5 * 1000)
    return best


def paths_agree(run_dir: Path, data: Path) -> dict[str, float]:
    """Max |logit difference| between the two paths, the same weights, a padded batch of dev pairs
    (float32): cuDNN's kernel against our loop where a GPU runs it."""
    import numpy as np
    import tensorflow as tf

    import nmt
    from nmt.constants import BOS_ID
    from nmt.layers.recurrent import forced_recurrence_path
    from nmt.pipeline import pad_batch

    translator = nmt.load(run_dir, "latest")
    lines = (data / "dev.en").read_text(encoding="utf-8").splitlines()[:32]
    targets = (data / "dev.ja").read_text(encoding="utf-8").splitlines()[:32]
    source, source_length = pad_batch(translator.source_tokenizer.encode(lines))
    target, _ = pad_batch([[BOS_ID, *ids] for ids in translator.target_tokenizer.encode(targets)])
    batch = {"source": tf.constant(source), "source_length": tf.constant(source_length),
             "target_in": tf.constant(target)}
    logits = {}
    for path in PATHS:
        with forced_recurrence_path(path):
            logits[path] = tf.function(lambda b: translator.model(b), autograph=False)(batch).numpy()
    return {"max_abs_logit_difference": float(np.abs(logits["keras"] - logits["loop"]).max()),
            "logit_scale": float(np.abs(logits["loop"]).max())}


def peer(steps: int, work: Path, venv: Path, sentences: Path) -> dict[str, float]:
    """The peer's training windows (tokens/s) and beam-5 sentences/s (its own prediction time)."""
    import re

    model_dir = work / "peer"
    build_peer_vocabularies(work, venv)
    done = subprocess.run(peer_command(steps, model_dir, venv), capture_output=True, text=True,
                          env={**os.environ, **QUIET})
    if done.returncode:
        sys.exit(f"the peer's training failed:\n{done.stderr[-3000:]}")
    rates = peer_rates(done.stderr)
    override = model_dir / "infer.yml"
    override.write_text("params:\n  beam_width: 5\ninfer:\n  batch_size: 64\n  batch_type: examples\n",
                        encoding="utf-8")
    command = [str(venv / "bin" / "onmt-main"), "--model", str(ROOT / "bench" / "peer" / "model.py"),
               "--config", str(model_dir / "config.yml"), str(override), "--model_dir", str(model_dir), "infer",
               "--features_file", str(sentences), "--predictions_file", str(model_dir / "out.ja"),
               "--log_prediction_time"]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **QUIET})
    if done.returncode:
        sys.exit(f"the peer's translation failed:\n{done.stderr[-3000:]}")
    seconds = float(re.search(r"Total prediction time \(s\): ([0-9.]+)", done.stdout + done.stderr).group(1))
    count = len(sentences.read_text(encoding="utf-8").splitlines())
    return {"train_tok_per_s": statistics.median(rates), "beam5_sentences_per_s": count / seconds, "windows": rates}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="100 training steps a run, 200 sentences translated")
    parser.add_argument("--steps", type=int, default=200, help="training steps a run (without --quick)")
    parser.add_argument("--cpu-smoke", action="store_true",
                        help="on the CPU, a tiny model, 41 steps, 2,000 pairs: checks that the script runs")
    parser.add_argument("--peer-venv", help="the peer's virtualenv (bench/peer/README.md); without it, ours only")
    parser.add_argument("--paths-only", action="store_true",
                        help="only time a training pass on each recurrence path (runs on a CPU too)")
    parser.add_argument("--shapes", nargs="+", choices=list(SHAPES), default=list(SHAPES))
    parser.add_argument("--work", help="a folder for the runs (default: a new temporary one)")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    if args.cpu_smoke:
        os.environ["CUDA_VISIBLE_DEVICES"] = "-1"  # before TensorFlow starts: no GPU, whatever the machine has
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # each run loads a new Translator: retracing warnings are expected
    gpus = tf.config.list_physical_devices("GPU")
    device = (tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU") if gpus
              else f"CPU only ({os.cpu_count()} cores)")
    timings = {}
    for shape in args.shapes:
        timings[shape] = step_times(SHAPES[shape] + (SMOKE_SHAPE if args.cpu_smoke else []), 2 if args.cpu_smoke else 8)
        print(f"{device}, {shape}: a training pass takes {timings[shape]['keras']:.1f} ms on the keras path, "
              f"{timings[shape]['loop']:.1f} ms on the loop path "
              f"(keras {timings[shape]['loop'] / timings[shape]['keras']:.2f}x as fast)", flush=True)
    if args.paths_only:
        return {"device": device, "step_ms": timings}
    if not gpus and not args.cpu_smoke:
        sys.exit("no GPU here: this benchmark measures the GPU paths (--cpu-smoke runs it on the CPU as a check)")
    steps = 41 if args.cpu_smoke else 100 if args.quick else args.steps
    count = 32 if args.cpu_smoke else 200 if args.quick else 500
    work = Path(args.work or tempfile.mkdtemp(prefix="nmt-gpu-"))
    data = smoke_data(work) if args.cpu_smoke else DATA
    sentences = (data / "dev.en").read_text(encoding="utf-8").splitlines()[:count]
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    shared: Path | None = None
    agreement: dict[str, Any] = {}
    for shape in args.shapes:
        for precision in PRECISIONS:
            for path in PATHS:
                run_dir = work / f"{shape}-{precision}-{path}"
                config = config_for(run_dir, data, steps, SHAPES[shape], precision, args.cpu_smoke)
                windows = train(config, path, shared)
                shared = shared or run_dir
                if shape not in agreement:
                    agreement[shape] = paths_agree(run_dir, data)
                rate, parameters = translate(run_dir, path, precision, sentences)
                row = {"shape": shape, "precision": precision, "path": path,
                       "parameters_millions": round(parameters, 2), "train_tok_per_s": statistics.median(windows),
                       "windows": windows, "beam5_sentences_per_s": rate}
                rows.append(row)
                print(f"{shape} {precision} {path}: {row['train_tok_per_s']:,.0f} target tok/s, "
                      f"{row['beam5_sentences_per_s']:.1f} sentences/s at beam 5 "
                      f"({time.perf_counter() - started:.0f} s so far)", flush=True)
    peer_row = None
    if args.peer_venv:
        dev = work / "dev.en"
        dev.write_text("\n".join(sentences) + "\n", encoding="utf-8")
        peer_row = peer(steps, work, Path(args.peer_venv), dev)
    summary = {"date": time.strftime("%Y-%m-%d %H:%M"), "device": device, "command": " ".join(sys.argv),
               "tensorflow": tf.__version__, "python": platform.python_version(), "steps_per_run": steps,
               "sentences": len(sentences), "step_ms": timings, "paths_agree": agreement, "rows": rows,
               "peer": peer_row,
               "seconds": round(time.perf_counter() - started, 1)}
    print(f"\n{device}; {steps} steps a run, {len(sentences)} sentences at beam 5\n"
          "| shape | precision | path | parameters | target tok/s | keras/loop | beam-5 sentences/s | keras/loop |\n"
          "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |")
    by_key = {(r["shape"], r["precision"], r["path"]): r for r in rows}
    for row in rows:
        loop = by_key[(row["shape"], row["precision"], "loop")]
        ratios = (f"{row['train_tok_per_s'] / loop['train_tok_per_s']:.2f}x",
                  f"{row['beam5_sentences_per_s'] / loop['beam5_sentences_per_s']:.2f}x") \
            if row["path"] == "keras" else ("", "")
        print(f"| {row['shape']} | {row['precision']} | {row['path']} | {row['parameters_millions']}M | "
              f"{row['train_tok_per_s']:,.0f} | {ratios[0]} | {row['beam5_sentences_per_s']:.1f} | {ratios[1]} |")
    if peer_row:
        print(f"| OpenNMT-tf 2.32 (peer's shape) | float32 | | 8.89M | {peer_row['train_tok_per_s']:,.0f} | | "
              f"{peer_row['beam5_sentences_per_s']:.1f} | |")
    for shape, agree in agreement.items():
        print(f"{shape}: the two paths' logits differ by at most {agree['max_abs_logit_difference']:.2e} "
              f"(largest logit {agree['logit_scale']:.2f})")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"{summary['seconds']:.0f} s in all; wrote {args.out}")
    return summary


if __name__ == "__main__":
    main()
