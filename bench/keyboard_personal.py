"""A keyboard that learns its user (issue 32, part 5): one prolific Tatoeba author's English as "a user".

The attribution column of data/en-ja names each sentence's author (``#id (name) & #id (name)``: the English
sentence's author first). For --author (default CM, the most prolific after CK, who wrote three quarters of
the corpus and so is no particular user):

- held back: the author's sentences in the dev split (never trained on, by the base model or the adapted one);
- fine-tuning data: the author's sentences in the training split (each English sentence once; the pair file
  repeats one per translation), one in ten of them kept aside as the fine-tuning run's own dev set (for its
  checkpoint choice, so the held-back part chooses nothing);
- ``nmt train`` with ``train.init_from`` the base run (its vocabulary and weights) for --steps steps, then
  ``nmt lexicon`` (the base's words and the author's own) if the base has a lexicon;
- bench/keyboard.py's measures of the base and the adapted model on the held-back sentences.

    python bench/keyboard_personal.py --base runs/keyboard-en --work /tmp/kb-personal
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
AUTHOR = re.compile(r"#\d+ \(([^)]*)\) &")  # the first author named: the English sentence's


def author_lines(path: Path) -> list[tuple[str, str]]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        rows = [line.rstrip("\n").split("\t") for line in handle]
    return [(match.group(1), "\t".join(row)) for row in rows if len(row) >= 3 and (match := AUTHOR.search(row[2]))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=Path, required=True, help="the keyboard run to adapt (runs/keyboard-en)")
    parser.add_argument("--author", default="CM")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--learning-rate", type=float, default=0.0005)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "keyboard-personal.json")
    args = parser.parse_args()

    from keyboard import evaluate, in_process, typed_words

    data = ROOT / "data" / "en-ja"
    train, dev = author_lines(data / "train.tsv.gz"), author_lines(data / "dev.tsv.gz")
    print("most prolific English authors (train):", Counter(a for a, _ in train).most_common(4), file=sys.stderr)
    # One row per English sentence: a pair file repeats a sentence once per translation, a user types it once.
    mine = list({row.split("\t")[0]: row for author, row in train if author == args.author}.values())
    held_back = list(dict.fromkeys(row.split("\t")[0] for author, row in dev if author == args.author))
    tune_dev = mine[::10]
    tune_train = [row for i, row in enumerate(mine) if i % 10]
    args.work.mkdir(parents=True, exist_ok=True)
    (args.work / "user-train.tsv").write_text("".join(r + "\n" for r in tune_train), encoding="utf-8")
    (args.work / "user-dev.tsv").write_text("".join(r + "\n" for r in tune_dev), encoding="utf-8")
    (args.work / "user-held-back.en").write_text("".join(r + "\n" for r in held_back), encoding="utf-8")
    print(f"{args.author}: {len(tune_train)} sentences to fine-tune on, {len(tune_dev)} for its dev, "
          f"{len(held_back)} held back (dev split)", file=sys.stderr)

    adapted = args.work / f"keyboard-{args.author}"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "nmt.cli", "train", "--config", str(ROOT / "configs" / "keyboard-en.yaml"),
                    "--set", f"run_dir={adapted}", "--set", f"train.init_from={args.base}",
                    "--set", f"data.train.path={args.work / 'user-train.tsv'}",
                    "--set", f"data.dev.path={args.work / 'user-dev.tsv'}",
                    "--set", f"train.steps={args.steps}", "--set", f"train.learning_rate={args.learning_rate}",
                    "--set", "train.warmup_steps=0", "--set", "train.decay=none", "--set", "train.eval_every=100",
                    "--set", "train.checkpoint_every=100", "--set", "train.batch_size=32"], check=True)
    tuning_s = time.perf_counter() - start
    if (args.base / "lexicon.txt").exists():  # the base's words and the user's own
        subprocess.run([sys.executable, "-m", "nmt.cli", "lexicon", "--run", str(adapted)], check=True)

    words = typed_words(held_back)
    rows = []
    for name, run in (("base", args.base), (f"adapted to {args.author}", adapted)):
        suggest, parameters = in_process(run)
        rows.append({"model": name, "run": str(run), **evaluate(suggest, held_back, words)})
    base_row, adapted_row = rows
    gain = {key: round(adapted_row[key] - base_row[key], 2) for key in base_row
            if key.endswith("_pct")}
    keys = [k for k in base_row if k.endswith("_pct")]
    print(f"{'model':<20}" + "".join(f"{k.removesuffix('_pct'):>16}" for k in keys))
    for row in rows:
        print(f"{row['model']:<20}" + "".join(f"{row[k]:>16}" for k in keys))
    print(f"{'gain (points)':<20}" + "".join(f"{gain[k]:>16}" for k in keys))
    result = {"what": "keyboard personalisation: base vs fine-tuned (train.init_from) on one author's held-back "
                      "sentences", "author": args.author, "fine_tune_sentences": len(tune_train),
              "held_back_sentences": len(held_back), "held_back_words": len(words), "steps": args.steps,
              "learning_rate": args.learning_rate, "fine_tune_seconds": round(tuning_s, 1), "rows": rows,
              "gain_points": gain, "date": time.strftime("%Y-%m-%d %H:%M"), "command": " ".join(sys.argv)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
