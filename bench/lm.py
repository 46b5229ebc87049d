"""Language model: PTB validation perplexity and training tokens/second of configs/ptb.yaml.

No peer run: the reference is the published TensorFlow PTB tutorial (Zaremba et al. 2014 models,
tensorflow/models tutorials/rnn/ptb README): valid perplexity 121.4 (small: 2x200 LSTM, 13 epochs),
86.2 (medium: 2x650, 39 epochs), 82.6 (large: 2x1500, 55 epochs).

  - tokens/s: `nmt train --config ptb.yaml` for --steps steps from scratch (TBPTT 64 streams x 35
    words), the median of the 20-step windows after the first (start-up and tracing dropped);
  - perplexity: `nmt evaluate --run RUN --text ptb.valid.txt` (the whole validation text as one
    stream, per word, +1 token per line for its end) of a trained run: --run, or --train to train
    configs/ptb.yaml in full first (45-75 minutes on 2 cores).

    python bench/lm.py --run runs/ptb           # tokens/s (200 steps) + the run's perplexity
    python bench/lm.py --train                  # full training, then both
    python bench/lm.py --quick                  # tokens/s from 60 steps only
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
PTB = ROOT.parent / "shared" / "data" / "ptb"
TUTORIAL_VALID = {
    "small (2x200, 13 epochs)": 121.4,
    "medium (2x650, 39 epochs)": 86.2,
    "large (2x1500, 55 epochs)": 82.6,
}


def nmt(*arguments: str) -> str:
    done = subprocess.run([sys.executable, "-m", "nmt.cli", *arguments], capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    if done.returncode:
        sys.exit(f"nmt {' '.join(arguments)} failed:\n{done.stderr[-3000:]}")
    return done.stdout + done.stderr


def train_rate(steps: int, run_dir: Path) -> float:
    nmt("train", "--config", "ptb.yaml", "--run-dir", str(run_dir), "--set", f"train.steps={steps}",
        "--set", f"train.eval_every={steps}", "--set", "data.dev=null", "--set", f"train.checkpoint_every={steps}")
    from nmt.visualize import read_scalar

    _, rates = read_scalar(run_dir, "train/target_tokens_per_second")
    return statistics.median(rates.tolist()[1:])


def perplexity(run_dir: Path) -> float:
    text = nmt("evaluate", "--run", str(run_dir), "--text", str(PTB / "ptb.valid.txt"))
    return float(re.search(r"word perplexity ([0-9.]+)", text).group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", help="a trained configs/ptb.yaml run to score (default: none)")
    parser.add_argument("--train", action="store_true", help="train configs/ptb.yaml in full into runs/ptb first")
    parser.add_argument("--steps", type=int, default=200, help="steps of the throughput run")
    parser.add_argument("--quick", action="store_true", help="60-step throughput run, no perplexity")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "lm.json"))
    args = parser.parse_args()
    if args.quick:
        args.steps, args.run, args.train = 60, None, False
    if args.steps < 60:
        sys.exit("--steps: at least 60 (rates are logged every 20 steps and the first window is dropped)")
    if args.train and Path("runs/ptb").exists():
        sys.exit("runs/ptb exists: --train would resume it (move it away, or score it with --run runs/ptb)")
    if args.train:
        started = time.perf_counter()
        nmt("train", "--config", "ptb.yaml")
        print(f"trained runs/ptb in {(time.perf_counter() - started) / 60:.1f} min", flush=True)
        args.run = "runs/ptb"
    rate = train_rate(args.steps, Path(tempfile.mkdtemp(prefix="nmt-lm-")) / "ptb")
    summary = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
               "command": " ".join(sys.argv), "train_words_per_s": round(rate),
               "tutorial_valid_perplexity": TUTORIAL_VALID}
    print(f"\n| configs/ptb.yaml (2x LSTM 400, tied, TBPTT 35 x 64) | value |\n| --- | ---: |\n"
          f"| training words/s (median of 20-step windows, {args.steps} steps) | {rate:,.0f} |")
    if args.run:
        config = (Path(args.run) / "config.yaml").read_text(encoding="utf-8")
        steps = re.search(r"^\s*steps: (\d+)", config, re.M).group(1)
        summary["run"], summary["run_steps"] = args.run, int(steps)
        summary["valid_perplexity"] = round(perplexity(Path(args.run)), 1)
        print(f"| valid perplexity of {args.run} ({steps} steps) | {summary['valid_perplexity']:.1f} |")
    for name, value in TUTORIAL_VALID.items():
        print(f"| TF PTB tutorial, {name}, valid perplexity | {value} |")
    Path(args.out).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
