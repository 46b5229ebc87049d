"""First-request latency of a freshly loaded model version, with and without the warm-up file
`nmt export` writes (assets.extra/tf_serving_warmup_requests, replayed on load).

One export of a run at the recipe's shape (configs/en-ja.yaml; --run, or a run trained here for
one step: latency does not depend on how trained the weights are), copied twice: as written, and
with the warm-up file removed (the copies are asserted byte-identical otherwise). For each trial
and copy, in alternating order, a fresh `nmt-model-server` process loads it (REST on a free
port) and, once /healthz answers, the same requests are timed: the first and the second of
/v1/translate (beam) and /v1/models/m:predict with translate_greedy. Prints a table, writes JSON.

    python bench/warmup.py [--run runs/en-ja] [--trials 3] [--out bench/results/warmup.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WARMUP_FILE = "assets.extra/tf_serving_warmup_requests"
REQUESTS = [  # (name, path, body): what a client's first calls to a new version look like
    ("translate (beam)", "/v1/translate", {"text": ["Where is the station?"]}),
    ("predict translate_greedy", "/v1/models/m:predict",
     {"signature_name": "translate_greedy", "instances": ["Good morning."]}),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, body: dict) -> float:
    """Seconds the request took (it must answer 200)."""
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=300) as response:
        assert response.status == 200, response.status
        response.read()
    return time.perf_counter() - started


def trial(model_dir: Path) -> dict:
    """A fresh server over ``model_dir``: its load time and each request's first and second latency."""
    port = free_port()
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "nmt.cli.model_server", "--host=127.0.0.1", "--port=0",
                                f"--rest_api_port={port}", "--model_name=m", f"--model_base_path={model_dir}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        while True:
            if process.poll() is not None:
                raise SystemExit(f"the server exited: {process.stderr.read()[-2000:]}")
            try:
                with urllib.request.urlopen(base + "/v1/models/m", timeout=5) as response:
                    if b"AVAILABLE" in response.read():
                        break
            except OSError:
                time.sleep(0.1)
        result = {"ready_s": time.perf_counter() - started}
        for name, path, body in REQUESTS:
            result[name] = [post(base + path, body) for _ in range(2)]
        return result
    finally:
        process.terminate()
        process.wait(timeout=60)


def tree_digest(folder: Path, skip: str) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.relative_to(folder).as_posix() != skip):
        digest.update(path.relative_to(folder).as_posix().encode() + path.read_bytes())
    return digest.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", help="a trained en-ja run (default: train configs/en-ja.yaml for one step here)")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "warmup.json"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-warmup-"))
    run = Path(args.run) if args.run else work / "run"
    if not args.run:
        subprocess.run([sys.executable, "-m", "nmt.cli", "train", "--config", str(ROOT / "configs" / "en-ja.yaml"),
                        "--run-dir", str(run), "--set", "train.steps=1", "--quiet"], check=True, cwd=ROOT,
                       stdout=subprocess.DEVNULL)
    subprocess.run([sys.executable, "-m", "nmt.cli", "export", "--run", str(run), "--out", str(work / "with")],
                   check=True, stdout=subprocess.DEVNULL)
    shutil.copytree(work / "with", work / "without")
    (work / "without" / "1" / WARMUP_FILE).unlink()
    # What is compared: the same export, the warm-up file its only difference.
    assert tree_digest(work / "with" / "1", WARMUP_FILE) == tree_digest(work / "without" / "1", WARMUP_FILE)
    assert (work / "with" / "1" / WARMUP_FILE).is_file()
    config = json.loads((work / "with" / "1" / "assets.extra" / "nmt.json").read_text())
    results: dict[str, list[dict]] = {"with": [], "without": []}
    for i in range(args.trials):
        for variant in (("with", "without") if i % 2 == 0 else ("without", "with")):
            results[variant].append(trial(work / variant))
            print(f"trial {i + 1} {variant} warm-up: {results[variant][-1]}", file=sys.stderr)
    rows = []
    for variant in ("without", "with"):
        trials = results[variant]
        row = {"variant": f"{variant} warm-up file", "ready_s": statistics.median(t["ready_s"] for t in trials)}
        for name, _, _ in REQUESTS:
            row[f"{name}: first ms"] = 1000 * statistics.median(t[name][0] for t in trials)
            row[f"{name}: second ms"] = 1000 * statistics.median(t[name][1] for t in trials)
        rows.append(row)
    columns = list(rows[0])
    print("| " + " | ".join(columns) + " |")
    print("|" + " --- |" * len(columns))
    for row in rows:
        print("| " + " | ".join(f"{row[c]:.2f}" if isinstance(row[c], float) else row[c] for c in columns) + " |")
    for name, _, _ in REQUESTS:
        ratio = rows[0][f"{name}: first ms"] / rows[1][f"{name}: first ms"]
        print(f"{name}: the first request is {ratio:.1f}x as fast with the warm-up file")
    record = {"date": time.strftime("%Y-%m-%d"), "machine": f"{os.cpu_count()} CPU cores", "trials": args.trials,
              "run": str(run) if args.run else "configs/en-ja.yaml trained 1 step", "task": config["task"],
              "medians": rows, "raw": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
