"""What terminology constraints cost: sentences/s and dev BLEU with 0, 1 and 2 constraints a sentence,
at beam 5 and 10, side by side in one run.

Constraints are drawn from each dev line's reference, as a terminology list would hold words the
translation must use: pieces of the reference (as the run's target SentencePiece writes them) of at
least --min-chars characters, chosen at random (seed 1234); a line without enough such pieces gets
fewer. Every setting translates the same --lines dev lines in the same process
(``Translator.translate(..., terminology=...)``, the search `nmt translate --json-input` runs), the
plain search first at each beam; each setting runs --rounds times and the fastest counts (the least
disturbed by other load on the machine). Reported: sentences/s, the ratio to the plain search at that
beam (Sockeye's users reported 15x slowdowns), the share of outputs holding all their constraints, and
BLEU (constraints taken from the references raise it: the column shows the search places them, not
that the model translates better).

    python bench/constraints.py --run runs/en-ja --src data/en-ja/dev.en --ref data/en-ja/dev.ja
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import time
from pathlib import Path

import nmt
from nmt.constants import NUM_SPECIAL, WORD_START
from nmt.constraints import Terminology
from nmt.evaluation import bleu_tokenize, score

RESULTS = Path(__file__).resolve().parent / "results" / "constraints.json"


def draw_constraints(translator, references: list[str], count: int, min_chars: int, seed: int) -> list[Terminology]:
    """Up to ``count`` distinct reference pieces per line, none inside another."""
    rng = random.Random(seed)
    items = []
    for reference in references:
        ids = translator.target_tokenizer.encode([reference])[0]
        pieces = sorted({translator.target_tokenizer.id_to_piece(i).replace(WORD_START, "").strip()
                         for i in ids if i >= NUM_SPECIAL})
        pieces = [p for p in pieces if len(p) >= min_chars]
        rng.shuffle(pieces)
        chosen: list[str] = []
        for piece in pieces:
            if len(chosen) == count:
                break
            if not any(piece in c or c in piece for c in chosen):
                chosen.append(piece)
        items.append(Terminology.of(chosen))
    return items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True)
    parser.add_argument("--src", required=True)
    parser.add_argument("--ref", required=True)
    parser.add_argument("--lines", type=int, default=500, help="the first N dev lines")
    parser.add_argument("--beams", default="5,10")
    parser.add_argument("--counts", default="0,1,2", help="constraints a sentence")
    parser.add_argument("--min-chars", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--json", default=str(RESULTS))
    args = parser.parse_args()
    sources = Path(args.src).read_text(encoding="utf-8").splitlines()[: args.lines]
    references = Path(args.ref).read_text(encoding="utf-8").splitlines()[: args.lines]
    translator = nmt.load(args.run)
    tokenize = bleu_tokenize(translator.config.data)
    rows = []
    for beam in [int(b) for b in args.beams.split(",")]:
        plain_speed = None
        for count in [int(c) for c in args.counts.split(",")]:
            items = draw_constraints(translator, references, count, args.min_chars, 1234) if count else None
            translator.translate(sources[:2], beam_size=beam, terminology=items[:2] if items else None)  # trace
            best, outputs = float("inf"), []
            for _ in range(args.rounds):
                start = time.perf_counter()
                results = translator.translate(sources, beam_size=beam, batch_size=args.batch_size, terminology=items)
                best = min(best, time.perf_counter() - start)
                outputs = [r[0].text for r in results]
            speed = len(sources) / best
            plain_speed = plain_speed or speed
            placed = sum(all(c in o for c in item.constraints) for o, item in zip(outputs, items)) if items else None
            given = sum(len(item.constraints) for item in items) if items else 0
            row = {"beam": beam, "constraints_per_sentence": count, "constraints_given": given,
                   "sentences_per_s": round(speed, 1), "vs_plain": round(speed / plain_speed, 3),
                   "all_placed": None if placed is None else round(placed / len(sources), 4),
                   "bleu": round(score(outputs, references, tokenize).bleu, 2)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"\n{'beam':>4} {'constraints':>11} {'sent/s':>8} {'vs plain':>8} {'all placed':>10} {'BLEU':>6}")
    for r in rows:
        placed = "-" if r["all_placed"] is None else f"{100 * r['all_placed']:.1f}%"
        print(f"{r['beam']:>4} {r['constraints_per_sentence']:>11} {r['sentences_per_s']:>8} {r['vs_plain']:>7.2f}x "
              f"{placed:>10} {r['bleu']:>6}")
    options = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "json")
    out = {"command": f"python bench/constraints.py {options}", "date": time.strftime("%Y-%m-%d %H:%M"),
           "machine": platform.processor() or platform.machine(), "lines": len(sources), "rows": rows}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
