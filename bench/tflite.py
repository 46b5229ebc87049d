"""Next words on a phone: the TensorFlow Lite export of a language model vs its SavedModel, per variant.

For each variant of `nmt export --format tflite --quantize all` (float32, float16 weights, dynamic-range
int8): the file size, agreement with the SavedModel's next words over dev prompts (the first 1..n-1 words
of the run's dev lines, cut at a seeded random point): top-1 (same best word, %) and top-5 (share of the
SavedModel's 5 words that the variant's 5 contain, %), and the latency of one call on one prompt (batch 1,
k 5): `tf.lite.Interpreter` through nmt.tflite.TfliteNextWords (Python tokenization + the model + the
word merge) vs the SavedModel's `next_words` signature (tokenization in the graph), median and p90 in ms.

    python bench/tflite.py --run /tmp/lm-small                     # 200 prompts
    python bench/tflite.py --run runs/lm-en --prompts 500 --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parent.parent
K = 5


def dev_prompts(run: Path, count: int, seed: int) -> list[str]:
    from nmt.data import read_corpus
    from nmt.run_dir import RunDir

    config = RunDir(run).read_config()
    if config.data.dev is None:
        raise SystemExit(f"{run} has no dev data (data.dev) to take prompts from")
    lines = [line.split() for line in read_corpus(config.data.dev, with_target=False).sources]
    lines = [words for words in lines if len(words) >= 2]
    rng = random.Random(seed)
    rng.shuffle(lines)
    return [" ".join(words[: rng.randint(1, len(words) - 1)]) for words in lines[:count]]


def timed(call, prompts: list[str]) -> tuple[list, list[float]]:
    call(prompts[0])  # warm-up (tracing, allocation)
    results, times = [], []
    for prompt in prompts:
        start = time.perf_counter()
        results.append(call(prompt))
        times.append((time.perf_counter() - start) * 1000)
    return results, times


def latency(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    p90 = ordered[int(0.9 * (len(ordered) - 1))]
    return {"median_ms": round(statistics.median(ordered), 2), "p90_ms": round(p90, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, type=Path, help="a trained language-model run directory")
    parser.add_argument("--prompts", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="TFLite interpreter threads (default: its own)")
    parser.add_argument("--work", type=Path, help="where the exports go (default: a temporary folder)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "tflite.json")
    args = parser.parse_args()

    import tensorflow as tf

    from nmt.export import export
    from nmt.tflite import TfliteNextWords, TfliteRecord, export_tflite

    work = args.work or Path(tempfile.mkdtemp(prefix="nmt-tflite-bench-"))
    prompts = dev_prompts(args.run, args.prompts, args.seed)
    start = time.perf_counter()
    folder = export_tflite(args.run, work / "tflite", "all")
    tflite_export_s = time.perf_counter() - start
    saved = tf.saved_model.load(str(export(args.run, work / "savedmodel")))
    next_words = saved.signatures["next_words"]
    saved_model_bytes = sum(p.stat().st_size for p in (work / "savedmodel").rglob("*") if p.is_file())

    def saved_call(prompt: str) -> list[str]:
        found = next_words(text=tf.constant([prompt]), k=tf.constant([K]))
        return [w.decode() for w in found["words"].numpy()[0] if w]

    reference, saved_times = timed(saved_call, prompts)
    rows = [{"variant": "SavedModel", "size_kib": round(saved_model_bytes / 1024), "top1_pct": 100.0,
             "top5_pct": 100.0, **latency(saved_times)}]
    record = TfliteRecord.read(folder)
    for variant, name in record.variants.items():
        model = TfliteNextWords(folder, variant, num_threads=args.threads)
        got, times = timed(lambda p, model=model: [w for w, _ in model.next_words(p, K)], prompts)
        top1 = statistics.mean(bool(g) and bool(r) and g[0] == r[0] for g, r in zip(got, reference))
        top5 = statistics.mean(len(set(g) & set(r)) / max(len(r), 1) for g, r in zip(got, reference))
        rows.append({"variant": f"TFLite {variant}", "size_kib": round((folder / name).stat().st_size / 1024),
                     "top1_pct": round(100 * top1, 1), "top5_pct": round(100 * top5, 1), **latency(times)})

    header = f"{'model':<16} {'size KiB':>9} {'top-1 %':>8} {'top-5 %':>8} {'median ms':>10} {'p90 ms':>8}"
    print(header)
    for row in rows:
        print(f"{row['variant']:<16} {row['size_kib']:>9} {row['top1_pct']:>8} {row['top5_pct']:>8} "
              f"{row['median_ms']:>10} {row['p90_ms']:>8}")
    result = {
        "what": "TFLite export vs SavedModel: size, next-word agreement with the SavedModel, latency per call "
                f"(batch 1, k={K})",
        "run": str(args.run), "prompts": len(prompts), "seed": args.seed, "threads": args.threads,
        "beam_size": record.beam_size, "max_pieces": record.max_pieces, "ops": record.ops,
        "tflite_export_s": round(tflite_export_s, 1), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "date": time.strftime("%Y-%m-%d"), "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
