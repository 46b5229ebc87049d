"""Does `nmt train` scale with the corpus and over workers? Prints a table and writes JSON.

Corpus scaling: corpora of N sentence pairs made by repeating the shipped data/en-ja training
set, each trained from scratch for the same number of steps with configs/en-ja.yaml (no dev set).
Per size: wall time (tokenizer training + tokenizing into the on-disk cache + the steps), the
process's peak memory (max RSS, from wait4), the cache's size on disk, the training rate, and the
time of one epoch projected from the run (time until the first logged step + the epoch's steps at
the measured seconds per step; a 500k-pair epoch is an hour here, too long to run per size).
Memory should stay flat as the corpus grows: the corpus is streamed, SentencePiece samples at
most tokenizer.input_sentence_size sentences (1M by default), and batches come from the cache.

Workers: the same short run with train.distribute=multi_worker as 1 and as 2 processes on
127.0.0.1 (both on this machine's cores: the point is correctness and overhead, not speed-up).

    python bench/scaling.py                       # 100k, 1M and 5M pairs; 1 vs 2 workers
    python bench/scaling.py --sizes 10000 50000 500000 --steps 100
    python bench/scaling.py --quick               # 20k and 100k pairs, 60 steps
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "data" / "en-ja" / "train.tsv.gz"


def make_corpus(pairs: int, folder: Path) -> Path:
    path = folder / f"pairs-{pairs}.tsv"
    if not path.is_file():
        with gzip.open(SHIPPED, "rt", encoding="utf-8") as shipped:
            lines = shipped.read().splitlines(keepends=True)
        with open(path, "w", encoding="utf-8") as out:
            out.writelines(itertools.islice(itertools.cycle(lines), pairs))
    return path


def run(command: list[str], env: dict | None = None) -> tuple[float, int, str]:
    """(wall seconds, max RSS in MiB, stderr) of one process."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, **(env or {})})
    stderr = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if process.returncode != 0:
        sys.exit(f"failed: {' '.join(command)}\n{stderr[-3000:]}")
    return wall, usage.ru_maxrss // 1024, stderr


def train_command(corpus: Path, run_dir: Path, steps: int, *extra: str) -> list[str]:
    command = [sys.executable, "-m", "nmt.cli", "train", "--config", "en-ja.yaml", "--run-dir", str(run_dir),
               "--set", f"data.train.path={corpus}", "--set", "data.train.limit=null", "--set", "data.dev=null",
               "--set", f"train.steps={steps}", "--set", f"train.eval_every={steps}",
               "--set", f"train.checkpoint_every={steps}"]
    for item in extra:
        command += ["--set", item]
    return command


def last_rate(stderr: str) -> float:
    rates = re.findall(r"tok/s ([0-9.e+]+)", stderr)
    return float(rates[-1]) if rates else float("nan")


def directory_mib(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def step_times(run_dir: Path) -> tuple[float, float, int]:
    """(wall time of the first logged step, seconds per step after it, that step) from the
    TensorBoard events' own wall times (train/loss is logged every 20 steps)."""
    import tensorflow as tf

    times = {}
    for events in sorted((run_dir / "logs").glob("events.out.tfevents.*")):
        for record in tf.data.TFRecordDataset(str(events)):
            event = tf.compat.v1.Event.FromString(record.numpy())
            if any(value.tag == "train/loss" for value in event.summary.value):
                times[int(event.step)] = event.wall_time
    steps = sorted(times)
    if len(steps) < 2:
        sys.exit(f"{run_dir}: fewer than two logged steps (train/loss every 20): use --steps 60 or more")
    return times[steps[0]], (times[steps[-1]] - times[steps[0]]) / (steps[-1] - steps[0]), steps[0]


def corpus_scaling(sizes: list[int], steps: int, work: Path) -> list[dict]:
    """Per size: the measured run, and one epoch's time projected from it: the time until the first
    logged step (tokenizers, cache, tracing) + the epoch's remaining steps at the steady step time."""
    rows = []
    for pairs in sizes:
        corpus = make_corpus(pairs, work)
        run_dir = work / f"run-{pairs}"
        start = time.time()
        wall, rss, stderr = run(train_command(corpus, run_dir, steps))
        first_time, step_seconds, first_step = step_times(run_dir)
        kept = int(re.search(r"train: (\d+) pairs kept", stderr).group(1))
        epoch_steps = -(-kept // 64)  # configs/en-ja.yaml: 64 sentence pairs a batch
        epoch = first_time - start + (epoch_steps - first_step) * step_seconds
        row = {"pairs": pairs, "steps": steps, "wall_s": round(wall, 1), "max_rss_mib": rss,
               "cache_mib": round(directory_mib(run_dir / "cache"), 1), "train_tok_per_s": round(last_rate(stderr)),
               "until_first_logged_step_s": round(first_time - start, 1), "step_s": round(step_seconds, 4),
               "epoch_steps": epoch_steps, "epoch_s_projected": round(epoch, 1)}
        print(f"  {pairs:>10,} pairs: {wall:7.1f} s, max RSS {rss:6,} MiB, cache {row['cache_mib']:8.1f} MiB, "
              f"{row['train_tok_per_s']:,} tok/s, {step_seconds:.3f} s/step, one epoch ({epoch_steps:,} steps) "
              f"~{epoch / 60:.1f} min", flush=True)
        rows.append(row)
    return rows


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def workers(steps: int, work: Path) -> list[dict]:
    """Target tokens per second of the whole job (the chief's log) with 1 and 2 workers."""
    corpus = make_corpus(100_000, work)
    rows = []
    for count in (1, 2):
        hosts = [f"127.0.0.1:{p}" for p in free_ports(count)]
        run_dir = work / f"workers-{count}"
        processes = []
        start = time.perf_counter()
        for index in range(count):
            env = {**os.environ, "TF_CONFIG": json.dumps({"cluster": {"worker": hosts},
                                                          "task": {"type": "worker", "index": index}})}
            processes.append(subprocess.Popen(train_command(corpus, run_dir, steps, "train.distribute=multi_worker"),
                                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env))
        logs = [p.communicate()[1] for p in processes]
        wall = time.perf_counter() - start
        if any(p.returncode for p in processes):
            sys.exit("a worker failed:\n" + "\n".join(log[-2000:] for log in logs))
        rows.append({"workers": count, "steps": steps, "wall_s": round(wall, 1),
                     "train_tok_per_s": round(last_rate(logs[0]))})
        print(f"  {count} worker(s): {rows[-1]['train_tok_per_s']:,} target tok/s, {wall:.1f} s wall", flush=True)
    rows[1]["ratio_to_one"] = round(rows[1]["train_tok_per_s"] / rows[0]["train_tok_per_s"], 2)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000, 5_000_000])
    parser.add_argument("--steps", type=int, default=100, help="training steps per run (default 100)")
    parser.add_argument("--quick", action="store_true", help="20k and 100k pairs, 60 steps")
    parser.add_argument("--no-workers", action="store_true", help="skip the 1 vs 2 workers run")
    parser.add_argument("--work", help="folder for corpora and runs (default: a temporary folder)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "scaling.json"))
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.steps = [20_000, 100_000], 60
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="nmt-scaling-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"corpus scaling: configs/en-ja.yaml, {args.steps} steps, in {work}")
    result = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} cores", "command": " ".join(sys.argv),
              "corpus": corpus_scaling(args.sizes, args.steps, work)}
    if not args.no_workers:
        print(f"workers: multi_worker on 127.0.0.1, 100k pairs, {args.steps} steps")
        result["workers"] = workers(args.steps, work)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
