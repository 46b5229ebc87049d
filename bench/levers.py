"""Levers for quality per minute (issue 15): two configurations of one recipe trained side by side for
the same time, each pinned to its own core with one TensorFlow thread, then their dev scores.

Each arm is ``nmt train --config CONFIG --budget MINUTES`` with its own ``--set`` overrides. The time
budget lays the learning-rate schedule over the minutes and stops there; the trainer then scores
its best weights on the whole dev set with the recipe's beam (the final line of metrics.jsonl).
Side by side, whatever else loads the machine loads both alike, so the same budget is the same
CPU time. An arm is NAME or NAME:KEY=VALUE,KEY=VALUE (config keys as ``nmt train --set`` takes them).
Prints a table (steps, target tokens/s, dev BLEU and chrF, or a language model's perplexity) and
writes JSON.

    python bench/levers.py --config small-parallel-enja.yaml --minutes 12 \\
        --arm baseline --arm "no-embedding-dropout:model.encoder.embedding_dropout=0,model.decoder.embedding_dropout=0"
    python bench/levers.py --config small-parallel-enja.yaml --minutes 10 --arm plain --arm xla:train.jit_compile=true
    python bench/levers.py --config ptb.yaml --minutes 12 --arm recipe --arm sampled-1024:train.sampled_softmax=1024
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import QUIET, ROOT, pinned_pair  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "levers.json"
SCORES = {"dev_bleu": "dev BLEU", "dev_chrf": "dev chrF", "dev_word_perplexity": "dev word perplexity",
          "dev_nats_per_character": "dev nats/char"}


def parse_arm(text: str) -> tuple[str, list[str]]:
    """'NAME' or 'NAME:key=value,key=value' -> (NAME, ['key=value', ...])."""
    name, _, overrides = text.partition(":")
    items = [item.strip() for item in overrides.split(",") if item.strip()]
    if not name or any("=" not in item for item in items):
        raise argparse.ArgumentTypeError(f"an arm is NAME or NAME:key=value,key=value, got {text!r}")
    return name, items


def train_command(config: str, run_dir: Path, minutes: float, overrides: list[str]) -> list[str]:
    command = [sys.executable, "-m", "nmt.cli", "train", "--config", config, "--run-dir", str(run_dir),
               "--budget", f"{minutes:g}m", "--quiet"]
    for item in overrides:
        command += ["--set", item]
    return command


def summary(run_dir: Path) -> dict:
    """Steps, training seconds, median target tokens/s and the final dev scores of one arm's run."""
    from nmt.visualize import read_scalar

    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    evaluations = [r for r in records if "step" in r]
    final = next((r for r in reversed(records) if r.get("final")), {})
    _, rates = read_scalar(run_dir, "train/target_tokens_per_second")
    return {
        "steps": evaluations[-1]["step"] if evaluations else None,
        "train_seconds": evaluations[-1]["train_seconds"] if evaluations else None,
        "target_tok_per_s": round(statistics.median(rates.tolist()[1:] or rates.tolist())) if len(rates) else None,
        "curve": [{"step": r["step"], "train_seconds": r["train_seconds"],
                   **{k: v for k, v in r.items() if k.startswith("dev_")}} for r in evaluations],
        "final": {k: v for k, v in final.items() if k.startswith("dev_") or k == "beam_size"},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="small-parallel-enja.yaml", help="the recipe both arms start from")
    parser.add_argument("--minutes", type=float, default=12.0, help="training budget of each arm")
    parser.add_argument("--arm", dest="arms", type=parse_arm, action="append", required=True,
                        help="NAME or NAME:key=value,... (twice: the two arms run side by side)")
    parser.add_argument("--work", help="folder for the runs (default: a new one under /tmp)")
    parser.add_argument("--out", default=str(RESULTS), help="JSON file; an existing one gets this pair appended")
    args = parser.parse_args()
    if len(args.arms) != 2:
        parser.error("give exactly two --arm (one per core)")
    work = Path(args.work or tempfile.mkdtemp(prefix="nmt-levers-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    run_dirs = [work / name for name, _ in args.arms]
    print(f"training {args.arms[0][0]} and {args.arms[1][0]} side by side for {args.minutes:g} minutes in {work}",
          flush=True)
    started = time.strftime("%Y-%m-%d %H:%M")
    pinned_pair([train_command(args.config, run_dir, args.minutes, overrides)
                 for run_dir, (_, overrides) in zip(run_dirs, args.arms)],
                [run_dir.with_suffix(".log") for run_dir in run_dirs], [ROOT, ROOT])
    arms = {name: {"overrides": overrides, **summary(run_dir)}
            for run_dir, (name, overrides) in zip(run_dirs, args.arms)}
    # Translation: BLEU and chrF; a language model: word perplexity and nats per character.
    scores = [key for key in SCORES if any(key in arm["final"] for arm in arms.values())]
    print(f"\n| arm | overrides | steps | target tok/s | {' | '.join(SCORES[key] for key in scores)} |\n"
          f"| --- | --- | ---: | ---: |{' ---: |' * len(scores)}")
    for name, arm in arms.items():
        values = " | ".join(f"{arm['final'].get(key, float('nan')):.3f}" for key in scores)
        print(f"| {name} | {' '.join(arm['overrides']) or '(the recipe)'} | {arm['steps']} | "
              f"{arm['target_tok_per_s']} | {values} |")
    out = Path(args.out)
    pairs = json.loads(out.read_text(encoding="utf-8")) if out.is_file() else []
    pairs.append({"date": started, "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                  "command": " ".join(sys.argv), "config": args.config, "minutes": args.minutes,
                  "setup": "side by side, one core and one TF thread each", "quiet_env": QUIET, "arms": arms})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(pairs, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
