"""Training throughput, ours vs OpenNMT-tf 2.32, same model shape, same data, same batches, one run.

The peer runs from its own virtualenv (TensorFlow 2.13 + tensorflow-addons), made once with
    python3.11 -m venv PEER/onmt-venv &&
        PEER/onmt-venv/bin/pip install "OpenNMT-tf==2.32.0" "tensorflow-cpu==2.13.*" sacrebleu
where PEER holds the peer's files (bench/peer/: model.py, config.yml; vocabularies are built here).

The shape (issue 5): word vocabularies of every training word (6,638 source / 8,778 target entries
in both toolkits), embeddings 256, 1-layer bidirectional LSTM encoder 256 per direction
(concatenated), dense bridge, 1-layer LSTM decoder 256 with Luong "general" attention and input
feeding, dropout 0.2, Adam 1e-3 constant, 64 sentences a batch, length buckets 2 wide: 8.89M
parameters in both. Both count target tokens per second the same way: target words + the end of
sentence, padding excluded. Start-up and tracing are excluded (the first report window of each run
is dropped); runs alternate ours, peer, ours, peer ... so the machine's load hits both alike.

Ours runs in three variants by default (--variants): the peer's shape; the same with XLA
(train.jit_compile, batches padded to their bucket's bound so XLA compiles one program per bucket);
and our default decoder without input feeding (not the same shape: 8.63M parameters, reported
apart). Two more set TensorFlow's thread pools (intra-op: threads within one op; inter-op: ops at
once): intra-2-inter-1 and intra-1-inter-2 (the default is one thread per core in each); batch-128
doubles the sentences per batch (the matmuls of every time step get twice the rows).

Also: a 2048x2048 float32 matmul's FLOP/s measured in the same run, and our model's training FLOP/s
(analytic count per token, 3x the forward pass) as a fraction of it.

    python bench/throughput.py --venv PEER_VENV                 # 2 rounds of 300 steps each
    python bench/throughput.py --venv PEER_VENV --quick         # 1 round of 120 steps
    python bench/throughput.py --venv PEER_VENV --side-by-side --out bench/results/throughput-side-by-side.json
    python bench/throughput.py --side-by-side --ours-before /tmp/before   # + ours at an earlier commit vs ours now

--side-by-side runs ours (same shape) and the peer at the same time, each pinned to its own core with
one TensorFlow thread (as bench/quality.py does): on a VM whose speed drifts (here by 2x between
minutes), alternating runs measure the drift as much as the toolkits; simultaneous ones cancel it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "small_parallel_enja"
PEER = ROOT / "bench" / "peer"
REPORT_EVERY = 20


# The peer's model and training (bench/peer/model.py, config.yml), every key pinned rather than
# inherited from the recipe: the recipe changes (tied embeddings, batches of 32, clipping), the
# comparison must not. check_same_shape() asserts the result against the peer's own figures.
PEER_PARAMETERS = 8_893_002  # what onmt-main reports for bench/peer/model.py ...
PEER_VOCABULARIES = (6_638, 8_778)  # ... on these vocabularies (source, target; with its <unk>)
PEER_BATCH = 64  # config.yml: train.batch_size, batch_type examples
# Parameters per vocabulary entry at this shape: a source word has an embedding (256); a target word
# an embedding, an output row and a bias (256 + 256 + 1). SentencePiece's word model and
# onmt-build-vocab count entries a little differently (8,777 vs 8,778 target entries here).
PER_SOURCE_ENTRY, PER_TARGET_ENTRY = 256, 513
PEER_SHAPE = [
    "tokenizer.model_type=word", "tokenizer.vocab_size=9000",  # every training word: 6,638 / 8,778 entries
    "tokenizer.shared=false", "data.max_source_length=40", "data.max_target_length=40",
    "model.embedding_dim=256", "model.tie_embeddings=false",
    "model.encoder.cell=lstm", "model.encoder.units=256", "model.encoder.layers=1", "model.encoder.bidirectional=true",
    "model.encoder.dropout=0.2",
    "model.decoder.cell=lstm", "model.decoder.units=256", "model.decoder.layers=1", "model.decoder.attention=luong",
    "model.decoder.attention_score=general", "model.decoder.input_feeding=true", "model.decoder.bridge=dense",
    "model.decoder.dropout=0.2",
    # The peer drops no embeddings (dropout on layer outputs only); with ours' embedding dropout
    # the 60-minute comparison of 2026-11-22 learned less per step (bench/README.md, section 2).
    "model.encoder.embedding_dropout=0.0", "model.decoder.embedding_dropout=0.0",
]
PEER_TRAINING = [
    f"train.batch_size={PEER_BATCH}", "train.batch_tokens=null", "train.bucket_width=2",
    "train.shuffle_buffer=1000000",  # the peer shuffles the whole corpus (sample_buffer_size: -1)
    "train.optimizer=adam", "train.learning_rate=0.001", "train.warmup_steps=0", "train.decay=none",
    "train.label_smoothing=0.0", "train.sampled_softmax=null", "train.precision=float32",
    "train.clip_norm=1e9",  # the peer does not clip gradients; ours must clip at something: never reached
    # The recipe's time budget, XLA and averaging are levers of its own (issue 15), not the peer's.
    "train.time_budget=null", "train.jit_compile=false", "train.average_last=null", "train.early_stopping=null",
    # The peer decodes with GNMT's penalty 0.6 in batches of 32 (config.yml params / infer).
    "decode.length_penalty=0.6", "decode.batch_size=32",
]


def ours_overrides(steps: int) -> list[str]:
    """`--set` items that give configs/small-parallel-enja.yaml the peer's shape and training."""
    return [
        f"data.train.source_path={DATA / 'train.en'}", f"data.train.target_path={DATA / 'train.ja'}", "data.dev=null",
        *PEER_SHAPE, *PEER_TRAINING,
        f"train.steps={steps}", f"train.eval_every={steps}", f"train.checkpoint_every={steps}",
    ]


def check_same_shape(run_dir: Path, stderr: str) -> float:
    """Our same-shape run's parameters in millions, after asserting that they and its batch are the
    peer's: a recipe change that leaks into the comparison stops the bench instead of skewing its table.
    The counts must agree exactly once the vocabularies' sizes (which the two tokenizers count a few
    entries apart, at most 0.1 %) are accounted for."""
    from nmt.run_dir import RunDir

    parameters = int(re.search(r"M parameters \(([0-9,]+)\)", stderr).group(1).replace(",", ""))
    source, target = (int(n) for n in re.search(r"vocabulary: source (\d+), target (\d+)", stderr).groups())
    batch = RunDir(run_dir).read_config().train.batch_size
    expected = (PEER_PARAMETERS + (source - PEER_VOCABULARIES[0]) * PER_SOURCE_ENTRY
                + (target - PEER_VOCABULARIES[1]) * PER_TARGET_ENTRY)
    close_vocabularies = all(abs(ours - peer) <= peer // 1000
                             for ours, peer in zip((source, target), PEER_VOCABULARIES))
    if parameters != expected or batch != PEER_BATCH or not close_vocabularies:
        sys.exit(f"{run_dir}: {parameters:,} parameters (vocabularies {source:,} / {target:,}) at batch {batch}; the "
                 f"peer has {PEER_PARAMETERS:,} ({PEER_VOCABULARIES[0]:,} / {PEER_VOCABULARIES[1]:,}) at {PEER_BATCH}, "
                 f"so the same shape has {expected:,}: the overrides (bench/throughput.py PEER_SHAPE) no longer "
                 "give it")
    return parameters / 1e6


def peer_config(model_dir: Path, vocabularies: Path) -> Path:
    """bench/peer/config.yml with the data and vocabulary folders filled in, written to model_dir."""
    config = (PEER / "config.yml").read_text(encoding="utf-8")
    config = config.replace("DATA", str(DATA)).replace("VOCAB", str(vocabularies))
    (model_dir / "config.yml").write_text(config, encoding="utf-8")
    return model_dir / "config.yml"


# Our runs: the peer's shape, the same with XLA, and our default decoder without input feeding
# (the attention output does not feed the next step, so the recurrence runs as one fused loop and
# attention over all steps at once; 8.63M parameters, not the same shape: reported apart); then the
# peer's shape with TensorFlow's thread pools set (by default both have one thread per core), and
# with batches twice as large (larger matmuls per time step): `--set` items and environment
# variables of each.
VARIANTS: dict[str, tuple[list[str], dict[str, str]]] = {
    "same-shape": ([], {}),
    "same-shape-xla": (["train.jit_compile=true"], {}),
    "no-input-feeding": (["model.decoder.input_feeding=false"], {}),
    "intra-2-inter-1": ([], {"TF_NUM_INTRAOP_THREADS": "2", "TF_NUM_INTEROP_THREADS": "1"}),
    "intra-1-inter-2": ([], {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "2"}),
    "batch-128": (["train.batch_size=128"], {}),
}


ONE_CORE = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": "1"}
QUIET = {"TF_CPP_MIN_LOG_LEVEL": "1", "PYTHONWARNINGS": "ignore"}


def train_command(run_dir: Path, items: list[str]) -> list[str]:
    """`nmt train` of configs/small-parallel-enja.yaml into run_dir with these `--set` items."""
    command = [sys.executable, "-m", "nmt.cli", "train", "--config", "small-parallel-enja.yaml",
               "--run-dir", str(run_dir)]
    for item in items:
        command += ["--set", item]
    return command


def ours_command(steps: int, run_dir: Path, extra: list[str]) -> list[str]:
    return train_command(run_dir, ours_overrides(steps) + extra)


def ours_rates(run_dir: Path, stderr: str) -> tuple[list[float], float]:
    """Target tokens/s of each 20-step window of `nmt train` (TensorBoard), the first dropped, and
    the model's size in millions of parameters."""
    from nmt.visualize import read_scalar

    _, rates = read_scalar(run_dir, "train/target_tokens_per_second")
    return rates.tolist()[1:], float(re.search(r"model: ([0-9.]+)M parameters", stderr).group(1))


def peer_command(steps: int, model_dir: Path, venv: Path, one_core: bool = False) -> list[str]:
    override = model_dir / "override.yml"
    model_dir.mkdir(parents=True, exist_ok=True)
    override.write_text(f"train:\n  max_step: {steps}\n  save_checkpoints_steps: {steps}\n"
                        f"  save_summary_steps: {REPORT_EVERY}\n", encoding="utf-8")
    peer_config(model_dir, model_dir.parent)
    threads = ["--intra_op_parallelism_threads", "1", "--inter_op_parallelism_threads", "1"] if one_core else []
    return [str(venv / "bin" / "onmt-main"), "--model", str(PEER / "model.py"),
            "--config", str(model_dir / "config.yml"), str(override), "--model_dir", str(model_dir),
            "--seed", "1234", *threads, "train"]


def peer_rates(stderr: str) -> list[float]:
    """Target tokens/s of each 20-step report of `onmt-main train`, the first dropped."""
    return [float(t) for t in re.findall(r"tokens/s = \d+ \(\d+ source, (\d+) target\)", stderr)][1:]


def run(command: list[str], env: dict | None = None) -> str:
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **QUIET, **(env or {})},
                          cwd=ROOT)  # `python -m nmt.cli` imports the nmt of its working folder first
    if done.returncode:
        sys.exit(f"failed: {' '.join(command[:4])} ...\n{done.stderr[-3000:]}")
    return done.stderr


def ours(steps: int, run_dir: Path, variant: tuple[list[str], dict[str, str]]) -> tuple[list[float], float]:
    extra, env = variant
    return ours_rates(run_dir, run(ours_command(steps, run_dir, extra), env))


def peer(steps: int, model_dir: Path, venv: Path) -> list[float]:
    return peer_rates(run(peer_command(steps, model_dir, venv)))


def pinned_pair(commands: list[list[str]], logs: list[Path], packages: list[Path | None]) -> list[str]:
    """Two commands at the same time, on cores 0 and 1, one TensorFlow thread each, each of ours
    importing the nmt package of its folder in ``packages`` (None: the peer); their stderr."""
    processes = []
    for command, path, package in zip(commands, logs, packages):  # logs to files: a full pipe would stall
        with open(path, "w", encoding="utf-8") as log:
            # `python -m` puts the working folder first on sys.path: run in the package's own folder.
            processes.append(subprocess.Popen(["taskset", "-c", str(len(processes)), *command],
                                              stdout=subprocess.DEVNULL, stderr=log, cwd=package,
                                              env={**os.environ, **QUIET, **ONE_CORE,
                                                   **({"PYTHONPATH": str(package)} if package else {})}))
    for process in processes:
        process.wait()
    texts = [path.read_text(encoding="utf-8") for path in logs]
    if any(process.returncode for process in processes):
        sys.exit("a side-by-side run failed:\n" + "\n".join(text[-2000:] for text in texts))
    return texts


def side_by_side(steps: int, work: Path, venv: Path, round_number: int) -> tuple[list[float], float, list[float]]:
    """Ours (same shape) and the peer at the same time, each pinned to its own core with one
    TensorFlow thread: a change in the machine's speed hits both in the same seconds."""
    run_dir, model_dir = work / f"pinned-ours-{round_number}", work / f"pinned-peer-{round_number}"
    logs = pinned_pair([ours_command(steps, run_dir, []), peer_command(steps, model_dir, venv, one_core=True)],
                       [work / f"pinned-ours-{round_number}.log", work / f"pinned-peer-{round_number}.log"],
                       [ROOT, None])
    rates, _ = ours_rates(run_dir, logs[0])
    return rates, check_same_shape(run_dir, logs[0]), peer_rates(logs[1])


def before_and_after(steps: int, work: Path, before: Path, round_number: int) -> tuple[list[float], list[float]]:
    """Ours as of ``before`` (a git worktree: its nmt package via PYTHONPATH) and ours now, same
    shape, side by side as :func:`side_by_side`."""
    run_dirs = [work / f"pinned-before-{round_number}", work / f"pinned-now-{round_number}"]
    logs = pinned_pair([ours_command(steps, run_dir, []) for run_dir in run_dirs],
                       [run_dir.with_suffix(".log") for run_dir in run_dirs], [before, ROOT])
    return ours_rates(run_dirs[0], logs[0])[0], ours_rates(run_dirs[1], logs[1])[0]


def build_peer_vocabularies(work: Path, venv: Path) -> None:
    for side in ("en", "ja"):
        target = work / f"vocab.{side}"
        if not target.is_file():
            subprocess.run([str(venv / "bin" / "onmt-build-vocab"), "--size", "0", "--save_vocab", str(target),
                            str(DATA / f"train.{side}")], check=True, capture_output=True)


def matmul_flops() -> float:
    import tensorflow as tf

    a = tf.random.normal([2048, 2048])
    run = tf.function(lambda x: tf.matmul(x, x))
    run(a).numpy()
    start, count = time.perf_counter(), 20
    for _ in range(count):
        result = run(a)
    result.numpy()
    return 2 * 2048**3 * count / (time.perf_counter() - start)


def training_flops_per_target_token(source_per_target: float, mean_source: float, target_vocab: int) -> float:
    """Multiply-adds x 2 of one target token's share of a training step (forward x 3): encoder
    (both directions) and memory projection per source token, then per target token the decoder
    LSTM (input feeding: 512 inputs), attention over the source, the attentional layer and the
    output softmax. Embedding lookups and element-wise ops are left out."""
    h = 256
    encoder_per_source = 2 * (2 * (h + h) * 4 * h) + 2 * (2 * h) * h
    decoder = 2 * (2 * h + h) * 4 * h + 2 * 2 * mean_source * (2 * h) + 2 * (3 * h) * h + 2 * h * target_vocab
    return 3 * (decoder + source_per_target * encoder_per_source)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="1 round of 120 steps")
    parser.add_argument("--venv", default=str(PEER / "onmt-venv"), help="the peer's virtualenv")
    parser.add_argument("--side-by-side", action="store_true",
                        help="run ours (same shape) and the peer at the same time, one core each, instead")
    parser.add_argument("--ours-before", metavar="DIR",
                        help="with --side-by-side: also run ours as of DIR (a git worktree of an earlier commit) "
                        "against ours now, side by side, in every round")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS)[:3],
                        help="our configurations to run (default: the first three)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "throughput.json"))
    args = parser.parse_args()
    if "same-shape" not in args.variants:
        parser.error("--variants must include same-shape (the peer's shape: the ratio and FLOP count refer to it)")
    if args.ours_before and not args.side_by_side:
        parser.error("--ours-before runs with --side-by-side")
    if args.quick:
        args.steps, args.rounds = 120, 1
    venv = Path(args.venv)
    if not (venv / "bin" / "onmt-main").is_file():
        sys.exit(f"the peer's virtualenv is missing: {venv} (see this script's docstring)")
    work = Path(tempfile.mkdtemp(prefix="nmt-throughput-"))
    build_peer_vocabularies(work, venv)
    if args.side_by_side:
        args.variants = ["same-shape"]
    results: dict[str, list[float]] = {name: [] for name in args.variants} | {"peer": []}
    parameters = {}
    for round_number in range(args.rounds):
        if args.side_by_side:
            ours_windows, parameters["same-shape"], peer_windows = side_by_side(args.steps, work, venv, round_number)
            results["same-shape"] += ours_windows
            results["peer"] += peer_windows
            print(f"round {round_number + 1}, one core each, side by side: nmt {statistics.median(ours_windows):,.0f}, "
                  f"peer {statistics.median(peer_windows):,.0f} target tok/s", flush=True)
            if args.ours_before:
                before_windows, now_windows = before_and_after(args.steps, work, Path(args.ours_before).resolve(),
                                                               round_number)
                results.setdefault("before", []).extend(before_windows)
                results.setdefault("now-beside-before", []).extend(now_windows)
                print(f"round {round_number + 1}, one core each, side by side: nmt before "
                      f"{statistics.median(before_windows):,.0f}, now {statistics.median(now_windows):,.0f} "
                      "target tok/s", flush=True)
            continue
        for name in args.variants:
            rates, parameters[name] = ours(args.steps, work / f"{name}-{round_number}", VARIANTS[name])
            results[name] += rates
            print(f"round {round_number + 1}: nmt {name} {statistics.median(rates):,.0f} target tok/s "
                  f"({parameters[name]}M parameters)", flush=True)
        rates = peer(args.steps, work / f"peer-{round_number}", venv)
        results["peer"] += rates
        print(f"round {round_number + 1}: peer {statistics.median(rates):,.0f} target tok/s", flush=True)
    medians = {name: statistics.median(rates) for name, rates in results.items()}
    peer_rate = medians["peer"]
    peak = matmul_flops()
    with open(DATA / "train.en", encoding="utf-8") as lines:
        lengths_en = [len(line.split()) for line in lines]
    with open(DATA / "train.ja", encoding="utf-8") as lines:
        lengths_ja = [len(line.split()) + 1 for line in lines]
    per_token = training_flops_per_target_token(sum(lengths_en) / sum(lengths_ja), statistics.mean(lengths_en), 8778)
    base = medians["same-shape"]
    summary = {
        "date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "command": " ".join(sys.argv), "steps_per_run": args.steps, "rounds": args.rounds,
        "setup": "side by side, one core and one TF thread each" if args.side_by_side else "alternating, all cores",
        "target_tok_per_s": {name: round(rate) for name, rate in medians.items()},
        "ratio_to_peer": {name: round(medians[name] / peer_rate, 2) for name in args.variants},
        "parameters_millions": parameters, "matmul_gflops": round(peak / 1e9, 1),
        "ours_model_gflops": round(base * per_token / 1e9, 2),
        "ours_fraction_of_matmul": round(base * per_token / peak, 3), "windows": results,
    }
    print(f"\n| run | parameters | target tok/s (median of {REPORT_EVERY}-step windows) | vs peer |\n"
          "| --- | ---: | ---: | ---: |")
    for name in args.variants:
        print(f"| nmt {name} | {parameters[name]}M | {medians[name]:,.0f} | {medians[name] / peer_rate:.2f}x |")
    print(f"| OpenNMT-tf 2.32 | 8.89M | {peer_rate:,.0f} | |")
    if "before" in medians:
        now_over_before = medians["now-beside-before"] / medians["before"]
        summary["ours_before"], summary["now_over_before"] = args.ours_before, round(now_over_before, 3)
        print(f"| nmt as of {args.ours_before}, beside nmt now | {parameters['same-shape']}M | "
              f"{medians['before']:,.0f} | {medians['before'] / peer_rate:.2f}x |")
        print(f"| nmt now, beside it | {parameters['same-shape']}M | {medians['now-beside-before']:,.0f} "
              f"| now / before: {now_over_before:.3f}x |")
    print(f"2048^2 float32 matmul: {peak / 1e9:.0f} GFLOP/s; nmt's training (same shape): {base * per_token / 1e9:.1f} "
          f"GFLOP/s = {100 * base * per_token / peak:.1f}% of it"
          + (" (the matmul on all cores, the training on one)" if args.side_by_side else ""))
    Path(args.out).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
