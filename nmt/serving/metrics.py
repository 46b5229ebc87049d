"""Request counts and latencies under TensorFlow Serving's metric names, as Prometheus text.

TF Serving exports its monitoring metrics with "/" turned into ":" (``/tensorflow/serving/request_count``
is ``:tensorflow:serving:request_count``): a request counter by model and status code, and a latency
histogram in microseconds by model, API and entry point (REST or gRPC) with exponential buckets
(10 µs × 1.8^i, 33 of them). Dashboards and alerts written for it read these unchanged.
"""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict

REQUEST_COUNT = ":tensorflow:serving:request_count"
REQUEST_LATENCY = ":tensorflow:serving:request_latency"
EXAMPLE_COUNT = ":tensorflow:serving:request_example_count_total"
LATENCY_BUCKETS_US = tuple(10 * 1.8**i for i in range(33))

class Metrics:
    """Thread-safe counters and histograms, rendered in the Prometheus text format (0.0.4)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str], int] = defaultdict(int)  # (model, status) -> count
        self.examples: dict[str, int] = defaultdict(int)  # model -> tf.Examples classified or regressed
        # (model, API, entrypoint) -> per-bucket counts (+inf last), sum of µs, count
        self.latency: dict[tuple[str, str, str], list] = {}

    def record(self, model: str, api: str, entrypoint: str, status: str, seconds: float, examples: int = 0) -> None:
        micros = seconds * 1e6
        with self._lock:
            self.requests[(model, status)] += 1
            if examples:
                self.examples[model] += examples
            cell = self.latency.setdefault((model, api, entrypoint), [[0] * (len(LATENCY_BUCKETS_US) + 1), 0.0, 0])
            cell[0][bisect.bisect_left(LATENCY_BUCKETS_US, micros)] += 1
            cell[1] += micros
            cell[2] += 1

    def render(self) -> str:
        with self._lock:
            lines = [f"# TYPE {REQUEST_COUNT} counter"]
            lines += [f"{REQUEST_COUNT}{_labels(model_name=m, status=s)} {n}"
                      for (m, s), n in sorted(self.requests.items())]
            lines.append(f"# TYPE {EXAMPLE_COUNT} counter")
            lines += [f"{EXAMPLE_COUNT}{_labels(model=m)} {n}" for m, n in sorted(self.examples.items())]
            lines.append(f"# TYPE {REQUEST_LATENCY} histogram")
            for (model, api, entrypoint), (buckets, total, count) in sorted(self.latency.items()):
                base = {"model_name": model, "API": api, "entrypoint": entrypoint}
                cumulative = 0
                for bound, n in zip([*LATENCY_BUCKETS_US, float("inf")], buckets):
                    cumulative += n
                    le = "+Inf" if bound == float("inf") else repr(float(bound))
                    lines.append(f"{REQUEST_LATENCY}_bucket{_labels(**base, le=le)} {cumulative}")
                lines.append(f"{REQUEST_LATENCY}_sum{_labels(**base)} {total!r}")
                lines.append(f"{REQUEST_LATENCY}_count{_labels(**base)} {count}")
        return "\n".join(lines) + "\n"


def _labels(**labels: str) -> str:
    def escape(value: str) -> str:
        return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')

    return "{" + ",".join(f'{k}="{escape(str(v))}"' for k, v in labels.items()) + "}"
