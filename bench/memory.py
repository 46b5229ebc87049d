"""How far back a model remembers: vanilla RNN, GRU and LSTM character models trained with the same
config, data and steps (configs/memory.yaml), then the norm of the gradient of the next character's
log-probability with respect to the embedding of each earlier character, against the distance.

    python bench/memory.py                      # trains runs/memory-{rnn,gru,lstm} if missing (minutes)
    python bench/memory.py --windows 200 --length 150

Prints a table, writes bench/results/memory.json and bench/results/memory.png. A gradient that fades
fast means the prediction no longer depends on what came that far back (vanishing gradients).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
CELLS = ("rnn", "gru", "lstm")
DISTANCES = (1, 2, 5, 10, 20, 50, 100, 149)


def train(cell: str, run_dir: Path, steps: int | None) -> float | None:
    """Trains one cell's model with the shipped config (resuming an unfinished run); its wall time in
    seconds, or None for a run that had finished before."""
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file() and any(json.loads(line).get("final") for line in metrics.read_text().splitlines()):
        return None
    command = [sys.executable, "-m", "nmt.cli", "--quiet", "train", "--config", "memory.yaml", "--run-dir",
               str(run_dir), "--set", f"model.decoder.cell={cell}"]
    if steps is not None:
        command += ["--set", f"train.steps={steps}"]
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT)
    return time.perf_counter() - start


def windows(text: str, count: int, length: int, seed: int = 0) -> list[str]:
    """``count`` passages of ``length`` characters from seeded random places. A prompt is one line
    to the model, so the text's lines (most are shorter than a passage) are joined by spaces."""
    flat = " ".join(line.strip() for line in text.splitlines() if line.strip())
    rng = np.random.default_rng(seed)
    starts = rng.choice(len(flat) - length, size=count, replace=False)
    return [flat[start : start + length].strip() for start in sorted(starts)]


def profile(run_dir: Path, texts: list[str]) -> np.ndarray:
    """Mean gradient norm per distance (index d-1: the character d places before the prediction),
    over ``texts``; each text's norms are divided by its largest first, so that every prediction
    weighs the same."""
    import nmt

    lm = nmt.load(run_dir)
    # The start symbol is not a character; the pieces are (with SentencePiece's leading "▁").
    found = [np.asarray(g.norms, dtype=np.float64)[1:] for g in lm.inspect.gradients(texts)]
    rows = np.full([len(found), max(map(len, found))], np.nan)  # column d-1: distance d
    for row, norms in zip(rows, found):
        row[: len(norms)] = norms[::-1] / max(float(np.nanmax(norms)), 1e-30)
    return np.nanmean(rows, axis=0)


def plot(profiles: dict[str, np.ndarray], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    for cell, curve in profiles.items():
        axis.semilogy(np.arange(1, len(curve) + 1), curve, label=cell.upper() if cell != "rnn" else "vanilla RNN")
    axis.set_xlabel("distance to the predicted character (characters back)")
    axis.set_ylabel("gradient norm (relative to the largest)")
    axis.set_title("How far back each cell's next-character guess still depends on its input")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default="runs", help="where the three runs live (default runs/)")
    parser.add_argument("--steps", type=int, default=None, help="override train.steps (default: the config's)")
    parser.add_argument("--windows", type=int, default=100, help="passages averaged over (default 100)")
    parser.add_argument("--length", type=int, default=150, help="characters per passage (default 150)")
    args = parser.parse_args()
    valid = (ROOT / "data" / "shakespeare" / "valid.txt").read_text(encoding="utf-8")
    texts = windows(valid, args.windows, args.length)
    profiles, seconds, perplexity = {}, {}, {}
    for cell in CELLS:
        run_dir = (ROOT / args.runs / f"memory-{cell}").resolve()
        seconds[cell] = train(cell, run_dir, args.steps)
        final = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()][-1]
        perplexity[cell] = final.get("dev_bits_per_character")
        profiles[cell] = profile(run_dir, texts)
    print(f"gradient norm of the next character's log-probability, relative to each passage's largest "
          f"(mean over {len(texts)} passages of {args.length} characters of data/shakespeare/valid.txt)")
    print(f"{'distance':>9} " + " ".join(f"{cell:>10}" for cell in CELLS))
    for distance in DISTANCES:
        if distance <= args.length:
            print(f"{distance:>9} " + " ".join(f"{profiles[c][distance - 1]:>10.2e}" for c in CELLS))
    print(f"{'dev bpc':>9} " + " ".join(f"{perplexity[c] or float('nan'):>10.3f}" for c in CELLS))
    print(f"{'train s':>9} " + " ".join(f"{seconds[c]:>10.0f}" if seconds[c] else f"{'(before)':>10}" for c in CELLS))
    RESULTS.mkdir(parents=True, exist_ok=True)
    record = {"config": "configs/memory.yaml", "steps": args.steps, "passages": len(texts), "length": args.length,
              "dev_bits_per_character": perplexity, "train_seconds": seconds,
              "relative_gradient_norm": {c: [float(x) for x in profiles[c]] for c in CELLS}}
    (RESULTS / "memory.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    plot(profiles, RESULTS / "memory.png")
    print(f"wrote {RESULTS / 'memory.json'} and {RESULTS / 'memory.png'}")


if __name__ == "__main__":
    main()
