"""bench/gpu.py runs end to end (on the CPU, a tiny model, a few steps), so that it works the day a
GPU is lent: every shape, precision and recurrence path trains, translates and lands in the JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "small_parallel_enja"


@pytest.mark.slow
@pytest.mark.skipif(not (DATA / "train.en").is_file(), reason="needs ../shared/data/small_parallel_enja")
def test_the_gpu_benchmark_runs_end_to_end_on_the_cpu(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu.py"), "--quick", "--cpu-smoke",
                           "--work", str(tmp_path / "work"), "--out", str(out)],
                          capture_output=True, text=True, timeout=900, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(out.read_text(encoding="utf-8"))
    runs = {(r["shape"], r["precision"], r["path"]) for r in summary["rows"]}
    assert runs == {(shape, precision, path) for shape in ("same-shape", "no-input-feeding")
                    for precision in ("float32", "mixed_float16") for path in ("keras", "loop")}
    for row in summary["rows"]:
        assert row["train_tok_per_s"] > 0 and row["beam5_sentences_per_s"] > 0 and row["windows"]
    # On the CPU both paths are loops over the same weights: the same logits, to float32 rounding.
    for agree in summary["paths_agree"].values():
        assert agree["max_abs_logit_difference"] < 1e-4 * max(1.0, agree["logit_scale"])
    assert "| same-shape | mixed_float16 | keras |" in done.stdout
