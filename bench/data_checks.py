"""What the leak checks cost as the corpus grows. Prints a table and writes JSON.

On the corpora of bench/scaling.py (the shipped data/en-ja training pairs repeated to N pairs), per
size, each in a fresh process (wall time and peak memory from wait4):
- the overlap count `nmt train` runs before its first step (the data/en-ja dev set against the
  streamed corpus, as `Task.prepare_data` calls it);
- the whole `nmt data check --train CORPUS --dev data/en-ja/dev.tsv.gz --json`;
- a process that only imports the reader, the floor both stand on;
and the overlap count's share of one epoch of training, an epoch being N / batch_size steps at the
seconds per step of a trained run (`--run`, from its last metrics.jsonl record; default: runs/en-ja).
The target (issue 29): under 10 % of an epoch, and memory flat as N grows.

    python bench/data_checks.py --run runs/en-ja                    # 100k, 1M, 5M pairs
    python bench/data_checks.py --sizes 20000 100000 --run runs/en-ja
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from scaling import make_corpus, run  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "data-checks.json"
DEV = ROOT / "data" / "en-ja" / "dev.tsv.gz"

IMPORT_ONLY = "import nmt.data, nmt.corpus_checks"
OVERLAP = """
import sys
from nmt.config import DataSourceConfig
from nmt.corpus_checks import count_overlap
from nmt.data import CorpusStream, read_tsv
dev = read_tsv(sys.argv[1], 0, 1)
overlap = count_overlap(CorpusStream(DataSourceConfig(format="tsv", path=sys.argv[2])),
                        list(zip(dev.sources, dev.targets)))
print(overlap.summary(), file=sys.stderr)
"""


def seconds_per_step(run_dir: Path) -> tuple[float, int]:
    """(seconds per training step, batch size) of a trained run, from its last evaluation record."""
    import yaml

    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
               if line.strip()]
    timed = [r for r in records if r.get("train_seconds") and r.get("step")]
    if not timed:
        sys.exit(f"{run_dir}/metrics.jsonl has no record with step and train_seconds")
    batch = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))["train"]["batch_size"]
    return timed[-1]["train_seconds"] / timed[-1]["step"], int(batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000, 5_000_000])
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "en-ja",
                        help="a trained run whose step time defines an epoch's (default: runs/en-ja)")
    parser.add_argument("--work", type=Path, help="folder for the corpora (default: a temporary one)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    step_seconds, batch = seconds_per_step(args.run)
    work = args.work or Path(tempfile.mkdtemp(prefix="nmt-data-checks-"))
    work.mkdir(parents=True, exist_ok=True)
    python = sys.executable
    _, floor_mib, _ = run([python, "-c", IMPORT_ONLY])
    rows = []
    for size in args.sizes:
        corpus = make_corpus(size, work)
        overlap_s, overlap_mib, said = run([python, "-c", OVERLAP, str(DEV), str(corpus)])
        check_s, check_mib, _ = run([python, "-m", "nmt.cli", "data", "check", "--train", str(corpus),
                                     "--dev", str(DEV), "--json"])
        epoch_s = size / batch * step_seconds
        rows.append({"pairs": size, "overlap_seconds": round(overlap_s, 2), "overlap_max_rss_mib": overlap_mib,
                     "check_seconds": round(check_s, 2), "check_max_rss_mib": check_mib,
                     "epoch_seconds": round(epoch_s, 1), "overlap_share_of_epoch": overlap_s / epoch_s,
                     "overlap_line": said.strip().splitlines()[-1]})
        print(f"{size:>10,} pairs: overlap {overlap_s:7.1f} s {overlap_mib:5d} MiB "
              f"({100 * overlap_s / epoch_s:.2f} % of a {epoch_s / 60:.0f}-minute epoch); "
              f"data check {check_s:7.1f} s {check_mib:5d} MiB", flush=True)
    print(f"\nimport-only process: {floor_mib} MiB; epoch = pairs / {batch} steps x {step_seconds:.4f} s "
          f"(from {args.run})")
    print(f"{'pairs':>10}  {'overlap s':>9}  {'MiB':>5}  {'% of epoch':>10}  {'check s':>8}  {'MiB':>5}")
    for r in rows:
        print(f"{r['pairs']:>10,}  {r['overlap_seconds']:>9.1f}  {r['overlap_max_rss_mib']:>5}  "
              f"{100 * r['overlap_share_of_epoch']:>10.2f}  {r['check_seconds']:>8.1f}  {r['check_max_rss_mib']:>5}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": platform.processor() or platform.machine(), "import_only_mib": floor_mib,
                                    "seconds_per_step": step_seconds, "batch_size": batch, "rows": rows}, indent=1)
                        + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
