"""Shared fixtures: tiny trained runs (seconds) that the CLI, inference and export tests reuse."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import yaml  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CYCLE = "north east south west up down left right".split()


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """configs/en-ja-tiny.yaml trained for a few dozen steps into a temporary run directory."""
    from nmt.config import load_config
    from nmt.training import Trainer

    run_dir = tmp_path_factory.mktemp("runs") / "en-ja-tiny"
    config = load_config(ROOT / "configs" / "en-ja-tiny.yaml", [f"run_dir={run_dir}", "train.steps=40",
                                                                "train.eval_every=20", "train.checkpoint_every=20"])
    Trainer(config).train()
    return run_dir


def write_config(tree: dict, path: Path, extra: dict | None = None) -> Path:
    """Writes an experiment file: ``tree`` with ``extra``'s dotted keys (``"train.steps": 5``) set."""
    for dotted, value in (extra or {}).items():
        node = tree
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    path.write_text(yaml.safe_dump(tree), encoding="utf-8")
    return path


def lm_config(tmp_path: Path, name: str, text: str, extra: dict | None = None) -> Path:
    """A tiny language-model experiment over ``text`` written to a file; returns the YAML path."""
    corpus = tmp_path / f"{name}.txt"
    corpus.write_text(text, encoding="utf-8")
    tree = {
        "task": "lm",
        "run_dir": str(tmp_path / name),
        "data": {"train": {"format": "text", "path": str(corpus)}},
        "tokenizer": {"model_type": "word", "vocab_size": 20, "character_coverage": 1.0},
        "model": {"embedding_dim": 24, "decoder": {"cell": "gru", "units": 32, "attention": "none", "dropout": 0.0}},
        "train": {"steps": 150, "batch_size": 4, "bptt_steps": 12, "learning_rate": 0.02, "eval_every": 10**6,
                  "checkpoint_every": 50},
    }
    return write_config(tree, tmp_path / f"{name}.yaml", extra)


def cycle_text(lines: int) -> str:
    return "".join(" ".join(CYCLE) + "\n" for _ in range(lines))


@pytest.fixture(scope="session")
def cycle_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A word LM trained on running text that repeats one 8-word line (fully predictable)."""
    from nmt.config import load_config
    from nmt.training import Trainer

    tmp_path = tmp_path_factory.mktemp("cycle")
    Trainer(load_config(lm_config(tmp_path, "cycle", cycle_text(300)))).train()
    return tmp_path / "cycle"


@pytest.fixture(scope="session")
def subword_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A subword LM (SentencePiece unigram) on 2,000 English sentences of the shipped data."""
    from nmt.config import load_config
    from nmt.training import Trainer

    tmp_path = tmp_path_factory.mktemp("subword")
    config = load_config(Path(__file__).resolve().parent.parent / "configs" / "lm-en.yaml", [
        f"run_dir={tmp_path / 'lm'}", "data.train.limit=2000", "data.dev.limit=50", "tokenizer.vocab_size=500",
        "model.embedding_dim=32", "model.decoder.units=32", "train.steps=60", "train.eval_every=30",
        "train.checkpoint_every=30", "train.warmup_steps=0",
    ])
    Trainer(config).train()
    return tmp_path / "lm"


KEYBOARD_TEXT = "".join(line + "\n" for line in [
    "I love pizza", "I love pizzas", "I love pie", "I love pasta", "I love Paris", "we eat pizza",
    "we eat pie", "we love Pisa", "Paris is far", "Pisa is near", "pizza is hot",
] * 20)


@pytest.fixture(scope="session")
def keyboard_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A word-level sentence model whose vocabulary has words that share prefixes, some capitalised
    (pizza, pizzas, pie, pasta, Paris, Pisa): completion has something to choose from."""
    from nmt.config import load_config
    from nmt.training import Trainer

    tmp_path = tmp_path_factory.mktemp("keyboard")
    Trainer(load_config(lm_config(tmp_path, "keyboard", KEYBOARD_TEXT, {
        "train.bptt_steps": None, "train.batch_size": 16, "train.steps": 120, "tokenizer.vocab_size": 24}))).train()
    return tmp_path / "keyboard"


# --- a real `nmt serve` on 127.0.0.1 (the serving and the demo-page tests) ---------------------


def free_ports(count: int = 1) -> list[int]:
    """``count`` distinct free ports on 127.0.0.1 (held together while they are chosen)."""
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def call(url: str, body: bytes | dict | None = None, method: str | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    request = urllib.request.Request(url, data=data, method=method or ("POST" if data is not None else "GET"))
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


class ServerURL(str):
    """A server's REST base URL that also knows its gRPC address."""

    def __new__(cls, base: str, grpc_address: str) -> ServerURL:
        url = super().__new__(cls, base)
        url.grpc_address = grpc_address
        return url


def wait_until(condition: Callable[[], object], timeout_s: float = 60, every_s: float = 0.05) -> bool:
    """Polls ``condition`` every ``every_s`` until it is true (True) or ``timeout_s`` passes (then
    one last look). Tests wait on a condition this way, never on a fixed sleep."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(every_s)
    return bool(condition())


def wait_until_serving(process: subprocess.Popen, port: int, stderr_text) -> str:
    """Waits for a started `nmt serve` to answer /healthz on ``port``; returns its base URL.
    Fails the test with the server's stderr (``stderr_text()``) if it exits or takes over 300 s."""
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 300
    while time.time() < deadline:
        if process.poll() is not None:
            pytest.fail(f"nmt serve exited: {stderr_text()[-3000:]}")
        try:
            if call(f"{base}/healthz")[0] == 200:
                return base
        except (OSError, ValueError):  # not listening yet, or an answer that is not JSON (not ours)
            pass
        time.sleep(0.2)  # whatever the answer was: no busy loop
    process.kill()
    pytest.fail(f"nmt serve did not answer within 300 s: {stderr_text()[-3000:]}")


@pytest.fixture(scope="session")
def server(tiny_run: Path, cycle_run: Path, keyboard_run: Path, tmp_path_factory: pytest.TempPathFactory):
    """`nmt serve` over exports of tiny_run (en-ja), cycle_run (lm) and keyboard_run (keyboard), and a
    broken model."""
    from nmt.export import export

    root = tmp_path_factory.mktemp("serve")
    export(tiny_run, root / "models" / "en-ja")
    export(cycle_run, root / "models" / "lm")
    export(keyboard_run, root / "models" / "keyboard")
    broken = root / "models" / "broken" / "1"
    broken.mkdir(parents=True)
    (broken / "saved_model.pb").write_bytes(b"not a SavedModel")
    (root / "models.config").write_text(
        "model_config_list {\n"
        '  config { name: "en-ja" base_path: "models/en-ja" model_platform: "tensorflow" }\n'
        '  config { name: "lm" base_path: "models/lm" model_platform: "tensorflow" }\n'
        '  config { name: "keyboard" base_path: "models/keyboard" model_platform: "tensorflow" }\n'
        '  config { name: "broken" base_path: "models/broken" model_platform: "tensorflow" }\n'
        "}\n",
        encoding="utf-8",
    )
    port, grpc_port = free_ports(2)
    process = subprocess.Popen(
        [sys.executable, "-m", "nmt.cli", "serve", "--config", str(root / "models.config"), "--port", str(port),
         "--grpc-port", str(grpc_port), "--max-request-rows", "8", "--max-body-bytes", "20000"],
        stderr=subprocess.PIPE, text=True,
    )
    base = wait_until_serving(process, port, lambda: process.stderr.read())
    yield ServerURL(base, f"127.0.0.1:{grpc_port}")
    process.terminate()
    stderr = process.communicate(timeout=60)[1]
    assert "warning: model broken version 1 at " in stderr and "failed to load" in stderr
