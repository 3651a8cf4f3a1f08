"""The overload section: how fast a full queue turns requests away.

One gateway serves a twin of cnn with a queue of at most 8 requests and dynamic
batching; 64 clients (one channel each, in a process of their own) send as fast as
they are answered for a few seconds. A rejection (RESOURCE_EXHAUSTED) should come
back within a few milliseconds: the caller can go elsewhere at once, and rejecting
must not cost the gateway what serving costs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from bench.config import BenchConfig
from bench.gateway_process import GatewayError, gateway
from bench.progress import log
from bench.report import Column, Section, num

CLIENTS = 64
QUEUE_LIMIT = 8
SECONDS = 6.0
TARGET_REJECT_P50_MS = 5.0
CONFIG = f"""
max_batch_size: 32
allowed_backends: ["onnxruntime"]
dynamic_batching {{
  max_queue_delay_microseconds: 2000
  default_queue_policy {{ max_queue_size: {QUEUE_LIMIT} }}
}}
"""


def write_repository(source: Path, dest: Path) -> Path:
    folder = dest / "cnn_queue8"
    (folder / "1").mkdir(parents=True)
    (folder / "1" / "model.onnx").symlink_to((source / "cnn" / "1" / "model.onnx").resolve())
    (folder / "config.pbtxt").write_text(CONFIG)
    return dest


def measure(url: str, seconds: float = SECONDS, clients: int = CLIENTS) -> dict[str, Any]:
    command = [
        sys.executable, "-m", "bench.overload_client", "--url", url, "--model", "cnn_queue8",
        "--clients", str(clients), "--seconds", str(seconds),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 120)
    if done.returncode != 0:
        raise GatewayError(f"overload client failed: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def summarize(latencies_s: dict[str, list[float]], seconds: float) -> list[dict[str, Any]]:
    rows = []
    for code, values in sorted(latencies_s.items()):
        ms = np.asarray(values) * 1000
        rows.append(
            {
                "status": code,
                "answers": len(values),
                "per_s": len(values) / seconds,
                "p50_ms": float(np.percentile(ms, 50)),
                "p99_ms": float(np.percentile(ms, 99)),
            }
        )
    return rows


def overload_section(config: BenchConfig, workdir: Path) -> Section:
    section = Section(
        key="overload",
        title="Overload: 64 clients against a queue of 8",
        description=(
            f"One gateway (default flags), a twin of cnn with `max_queue_size: {QUEUE_LIMIT}` "
            f"and dynamic batching; {CLIENTS} clients (one gRPC channel each, in one process "
            f"of their own) send batch-1 requests as fast as they are answered for "
            f"{SECONDS:.0f} s. Latency is client-side, by the status the answer had."
        ),
        columns=[
            Column("status", "status"),
            Column("answers", "answers", num(0)),
            Column("answers/s", "per_s", num(1)),
            Column("p50 (ms)", "p50_ms", num(2)),
            Column("p99 (ms)", "p99_ms", num(2)),
            Column("target", "target"),
        ],
    )
    repository = write_repository(config.repository, workdir / "overload-repository")
    try:
        with gateway(repository, workdir / "overload-gateway.log") as gw:
            log(f"overload: {CLIENTS} clients for {SECONDS:.0f} s")
            result = measure(gw.url)
    except GatewayError as exc:
        section.notes.append(f"overload run failed: {exc}")
        return section
    section.rows = summarize(result["latencies_s"], result["seconds"])
    for row in section.rows:
        if row["status"] == "RESOURCE_EXHAUSTED":
            met = row["p50_ms"] <= TARGET_REJECT_P50_MS
            row["target"] = f"p50 <= {TARGET_REJECT_P50_MS:g} ms: {'pass' if met else 'miss'}"
    return section


if __name__ == "__main__":
    import argparse
    import tempfile

    from bench.config import parse_config

    parsed, _ = parse_config(argparse.ArgumentParser(description=__doc__), None, ("overload",))
    with tempfile.TemporaryDirectory() as tmp:
        print(overload_section(parsed, Path(tmp)).markdown())
