"""Load test of `nmt serve` over TF Serving's two APIs: requests/second and p50/p99 latency of the
``next_words`` signature (k=5) called by gRPC ``Predict`` and by REST ``:predict`` at 1, 8 and 32
concurrent clients, with request batching on and off, side by side in one run.

    python bench/serving_load.py --model serve/models/lm-en [--seconds 20] [--out bench/results/serving.json]

MODEL is an exported language model (`nmt export --run runs/lm-en --out serve/models/lm-en`). Two
servers run at once (`nmt serve --grpc-port`, batching off and on), each on free 127.0.0.1 ports;
clients are threads sending prompts from data/en-ja/dev.en prefixes in a closed loop (each sends its
next request when the previous one is answered; gRPC clients each on their own channel). The table's
last column is the ratio batching on / off at the same API and concurrency.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_ports(count: int) -> list[int]:
    """Distinct free ports (held together while chosen, so two calls cannot return the same one)."""
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def start_server(model: Path, batching: bool) -> tuple[subprocess.Popen, dict[str, str], Path]:
    folder = Path(tempfile.mkdtemp(prefix="nmt-bench-"))
    config = folder / "models.config"
    config.write_text(
        f'model_config_list {{ config {{ name: "lm" base_path: "{model.resolve()}" '
        'model_platform: "tensorflow" } }\n',
        encoding="utf-8",
    )
    port, grpc_port = free_ports(2)
    command = [sys.executable, "-m", "nmt.cli", "serve", "--config", str(config), "--port", str(port),
               "--grpc-port", str(grpc_port)]
    if not batching:
        command.append("--no-batching")
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            urllib.request.urlopen(f"{base}/healthz", timeout=5).read()
            return process, {"rest": base, "grpc": f"127.0.0.1:{grpc_port}"}, folder
        except OSError as err:
            if process.poll() is not None:
                raise SystemExit("nmt serve exited; run it by hand to see why") from err
            time.sleep(0.5)
    process.kill()
    raise SystemExit("nmt serve did not start within 5 minutes")


def rest_client(base: str) -> Callable[[str], None]:
    url = f"{base}/v1/models/lm:predict"

    def ask(prompt: str) -> None:
        data = json.dumps({"signature_name": "next_words", "instances": [{"text": prompt, "k": 5}]}).encode()
        with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=120) as r:
            body = json.loads(r.read())
        if not body.get("predictions"):
            raise RuntimeError(f"bad answer: {body}")

    return ask


def grpc_client(address: str) -> Callable[[str], None]:
    import grpc
    import numpy as np
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(address))

    def ask(prompt: str) -> None:
        request = predict_pb2.PredictRequest()
        request.model_spec.name, request.model_spec.signature_name = "lm", "next_words"
        request.inputs["text"].CopyFrom(tf.make_tensor_proto(np.array([prompt.encode()], dtype=object)))
        request.inputs["k"].CopyFrom(tf.make_tensor_proto(np.array([5], np.int32)))
        if not stub.Predict(request, 120).outputs["words"].string_val:
            raise RuntimeError("bad answer: no words")

    return ask


CLIENTS = {"rest": rest_client, "grpc": grpc_client}


def load(api: str, address: str, clients: int, seconds: float, prompts: list[str]) -> dict[str, float]:
    warm = CLIENTS[api](address)
    for prompt in prompts[:3]:  # warm-up: the first calls compile the graph
        warm(prompt)
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def client(seed: int) -> None:
        rng = random.Random(seed)
        ask = CLIENTS[api](address)  # each client its own connection (gRPC: its own channel)
        while time.perf_counter() < stop:
            start = time.perf_counter()
            try:
                ask(rng.choice(prompts))
            except Exception as error:  # noqa: BLE001 - counted and reported, not hidden
                with lock:
                    errors.append(repr(error))
                continue
            with lock:
                latencies.append(time.perf_counter() - start)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    latencies.sort()

    def quantile(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000

    if errors:
        print(f"warning: {len(errors)} failed requests, e.g. {errors[0]}", file=sys.stderr)
    return {"requests": len(latencies), "errors": len(errors), "rps": len(latencies) / elapsed,
            "p50_ms": quantile(0.5), "p99_ms": quantile(0.99)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="exported LM folder (holding numbered versions)")
    parser.add_argument("--seconds", type=float, default=20.0, help="measurement time per setting (default 20)")
    parser.add_argument("--clients", default="1,8,32", help="concurrency levels (default 1,8,32)")
    parser.add_argument("--apis", default="grpc,rest", help="which APIs (default grpc,rest)")
    parser.add_argument("--quick", action="store_true", help="3 s per setting")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "serving.json"))
    args = parser.parse_args()
    if args.quick:
        args.seconds = 3.0
    model = Path(args.model)
    if not any(p.name.isdigit() for p in model.iterdir()):
        raise SystemExit(f"{model} holds no numbered SavedModel version: run `nmt export` first")
    words = [line.split() for line in (ROOT / "data" / "en-ja" / "dev.en").read_text(encoding="utf-8").splitlines()]
    rng = random.Random(0)
    prompts = [" ".join(w[: rng.randint(1, max(1, len(w) - 1))]) for w in words if w]
    levels = [int(c) for c in args.clients.split(",")]
    apis = args.apis.split(",")
    unknown = set(apis) - set(CLIENTS)
    if unknown:
        raise SystemExit(f"--apis: unknown {', '.join(sorted(unknown))}; choose from grpc, rest")
    results: dict[str, dict[str, dict[int, dict[str, float]]]] = {}
    # Off and on alternate per level and API, so that a change in the machine's load hits both alike.
    servers = {batching: start_server(model, batching) for batching in (False, True)}
    try:
        for clients in levels:
            for api in apis:
                for batching in (False, True):
                    _, addresses, _ = servers[batching]
                    results.setdefault(api, {}).setdefault("on" if batching else "off", {})[clients] = load(
                        api, addresses[api], clients, args.seconds, prompts)
    finally:
        for process, _, folder in servers.values():
            process.terminate()
            process.wait(timeout=60)
            shutil.rmtree(folder, ignore_errors=True)
    header = (f"{'API':>4} {'clients':>7} | {'off req/s':>9} {'p50 ms':>7} {'p99 ms':>7} | "
              f"{'on req/s':>8} {'p50 ms':>7} {'p99 ms':>7} | on/off")
    print(header)
    print("-" * len(header))
    for api in apis:
        for clients in levels:
            off, on = results[api]["off"][clients], results[api]["on"][clients]
            print(f"{api:>4} {clients:>7} | {off['rps']:>9.1f} {off['p50_ms']:>7.0f} {off['p99_ms']:>7.0f} | "
                  f"{on['rps']:>8.1f} {on['p50_ms']:>7.0f} {on['p99_ms']:>7.0f} | {on['rps'] / off['rps']:.2f}x")
    record = {
        "benchmark": "nmt serve, next_words signature (k=5) by gRPC Predict and REST :predict",
        "model": str(model),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "seconds_per_setting": args.seconds,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "results": results,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
