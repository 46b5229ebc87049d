"""Beam size and length penalty of a trained translation run, swept on its dev set (issue 15).

The decode settings are chosen after training, on dev, like any other hyperparameter: this script
translates the dev sources once per (beam size, GNMT length-penalty alpha) with the run's best
weights and scores each with the run's sacrebleu tokenizer. Prints a table, writes JSON. Put the
winner in the recipe's ``decode:`` section (or the run's config.yaml).

    python bench/decode_sweep.py --run runs/small-parallel-enja --beams 5 --alphas 0,0.6,1.0,1.4,2.0
    python bench/decode_sweep.py --run runs/en-ja --beams 3,5,10 --alphas 0.6,1.0
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results" / "decode-sweep.json"


def numbers(text: str, kind: type) -> list:
    try:
        return [kind(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"a comma-separated list of numbers, got {text!r}") from None


def dev_set(config, src: str | None, ref: str | None) -> tuple[list[str], list[str], str]:
    """--src/--ref, or the run's dev split read as training reads it (any data format)."""
    from nmt.data import read_corpus

    if src or ref:
        if not (src and ref):
            sys.exit("give both --src and --ref, or neither (the run's dev split)")
        return (Path(src).read_text(encoding="utf-8").splitlines(),
                Path(ref).read_text(encoding="utf-8").splitlines(), f"{src} / {ref}")
    corpus = read_corpus(config.data.dev, with_target=True)
    return corpus.sources, corpus.targets or [], "the run's data.dev"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="run directory written by `nmt train` (a translation run)")
    parser.add_argument("--weights", default="best", help="best (default), latest, averaged or ckpt-N")
    parser.add_argument("--src", help="dev sources, one per line (default: the run's data.dev split)")
    parser.add_argument("--ref", help="their references, one per line")
    parser.add_argument("--tokenize", help="sacrebleu tokenizer (default: the run's, as nmt evaluate picks it)")
    parser.add_argument("--beams", type=lambda t: numbers(t, int), default=[5], help="beam sizes, e.g. 1,5,10")
    parser.add_argument("--alphas", type=lambda t: numbers(t, float), default=[0.0, 0.6, 1.0, 1.4, 2.0],
                        help="length-penalty alphas (GNMT; 0 = none), e.g. 0,0.6,1.0")
    parser.add_argument("--out", default=str(RESULTS), help="JSON file to write")
    args = parser.parse_args()
    if any(b < 1 for b in args.beams):
        parser.error("beam sizes must be at least 1")

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter, not the table
    from nmt.errors import NmtError
    from nmt.evaluation import bleu_metric, bleu_tokenize, score
    from nmt.inference import load

    loaded = load(args.run, weights=args.weights, task="translation")  # weights read once
    # One translator per alpha over the same model, made before any translating: a bad alpha fails
    # here, by decode.length_penalty's own rule.
    try:
        translators = {alpha: loaded.with_decode(length_penalty=alpha) for alpha in args.alphas}
    except NmtError as error:
        parser.error(f"--alphas: {error}")
    sources, references, dev_name = dev_set(loaded.config, args.src, args.ref)
    tokenize = args.tokenize or bleu_tokenize(loaded.config.data)
    # Lengths in BLEU's own tokens (MeCab words for Japanese, which has no spaces to split on).
    split = bleu_metric(tokenize).tokenizer

    def mean_tokens(lines: list[str]) -> float:
        return round(sum(len(split(line).split()) for line in lines) / len(lines), 2)

    rows = []
    for alpha, translator in translators.items():
        for beam in args.beams:
            start = time.perf_counter()
            hypotheses = [hyps[0].text for hyps in translator.translate(sources, beam_size=beam)]
            seconds = time.perf_counter() - start
            scores = score(hypotheses, references, tokenize)
            rows.append({"beam_size": beam, "length_penalty": alpha, "bleu": round(scores.bleu, 2),
                         "chrf": round(scores.chrf, 2), "seconds": round(seconds, 1),
                         "mean_output_tokens": mean_tokens(hypotheses)})
            print(f"beam {beam:>2}  alpha {alpha:<4g}  BLEU {scores.bleu:6.2f}  chrF {scores.chrf:6.2f}  "
                  f"({seconds:.0f} s)", flush=True)

    best = max(rows, key=lambda r: r["bleu"])
    print(f"\n{'beam':>4} {'alpha':>5} {'BLEU':>6} {'chrF':>6} {'tokens/line':>11}")
    for r in rows:
        mark = "  <- best" if r is best else ""
        print(f"{r['beam_size']:>4} {r['length_penalty']:>5g} {r['bleu']:>6.2f} {r['chrf']:>6.2f} "
              f"{r['mean_output_tokens']:>11.2f}{mark}")
    reference_tokens = mean_tokens(references)
    print(f"references: {reference_tokens} tokens/line, {len(references)} lines; tokenize {tokenize}")
    result = {"run": str(Path(args.run).resolve()), "weights": args.weights, "dev": dev_name,
              "tokenize": tokenize, "reference_tokens_per_line": reference_tokens, "rows": rows, "best": best,
              "machine": platform.processor() or platform.machine(), "date": time.strftime("%Y-%m-%d %H:%M")}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
