"""Tracing off and on for a gateway under measurement: the environments that set it
(gateway_process.gateway's `env`), and the OTLP sink process a traced gateway exports
to (bench.otlp_sink, as a collector on the same host would be). The tracing section
and bench.thread_cpu compare gateways started with these.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.gateway_process import GatewayError

# The no-op tracer, with any OTLP endpoint inherited from this process's environment removed.
TRACING_OFF: dict[str, str | None] = {
    "OTEL_SDK_DISABLED": "true",
    "OTEL_EXPORTER_OTLP_ENDPOINT": None,
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": None,
}


@dataclass
class Sink:
    """A running bench.otlp_sink: where to export, and what it counted."""

    port: int
    counts_file: Path
    pid: int

    def counts(self) -> tuple[int, int]:
        """(spans, exports) the sink reported when it stopped; (0, 0) if it did not."""
        try:
            data = json.loads(self.counts_file.read_text())
        except (OSError, ValueError):
            return 0, 0
        return int(data["spans"]), int(data["exports"])


@contextmanager
def receiver_process(workdir: Path, name: str) -> Iterator[Sink]:
    """bench.otlp_sink in its own process; its counts are readable once the block ends."""
    port_file = workdir / f"otlp-sink-{name}.port"
    counts_file = workdir / f"otlp-sink-{name}.counts.json"
    for path in (port_file, counts_file):
        path.unlink(missing_ok=True)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.otlp_sink",
            "--port-file",
            str(port_file),
            "--counts-file",
            str(counts_file),
        ],
        cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        deadline = time.monotonic() + 30
        while not port_file.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise GatewayError(f"the OTLP sink did not start (exit code {process.poll()})")
            time.sleep(0.05)
        sink = Sink(int(port_file.read_text()), counts_file, process.pid)
        yield sink
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def tracing_on(receiver_port: int, ratio: float = 1.0) -> dict[str, str | None]:
    """Tracing exported to the sink on `receiver_port`: every request at ratio 1
    (always_on), else the sampling a production service would use."""
    sampler = (
        {"OTEL_TRACES_SAMPLER": "always_on", "OTEL_TRACES_SAMPLER_ARG": None}
        if ratio >= 1
        else {
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": str(ratio),
        }
    )
    return {
        "OTEL_SDK_DISABLED": None,
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver_port}",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": None,
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_SERVICE_NAME": "infergate-bench",
        **sampler,
    }
