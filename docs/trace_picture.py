"""Draw a real trace tree produced by the gateway, as text, for docs/observability.md.

Starts a gateway in process with tracing on, exporting to a real OTLP receiver on
loopback, sends three concurrent requests that carry a caller's `traceparent`, and
draws the spans of the first request (and the batch span that links them) as a
waterfall: each bar is where that span sat in time.

    .venv/bin/python docs/trace_picture.py > docs/trace-example.txt
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
from pathlib import Path

import grpc
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from infergate.clients import build_request  # noqa: E402
from infergate.gateway.server import GatewayServer  # noqa: E402
from infergate.protocol import inference_pb2_grpc as pb_grpc  # noqa: E402
from infergate.settings import Settings  # noqa: E402
from tests.otlp_receiver import ReceivedSpan, Receiver  # noqa: E402

WIDTH = 48
CONFIG = """
max_batch_size: 16
dynamic_batching { max_queue_delay_microseconds: 20000 }
response_cache { enable: true }
"""


async def collect() -> tuple[list[ReceivedSpan], dict[str, tuple[int, int]]]:
    receiver = Receiver()
    await receiver.start()
    os.environ.update(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.port}",
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        shutil.copytree(ROOT / "models" / "repository" / "digits" / "1", repo / "digits" / "1")
        (repo / "digits" / "config.pbtxt").write_text(CONFIG)
        server = GatewayServer(Settings(model_repository=repo, port=0, metrics_port=0))
        await server.start()
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            headers = [f"00-{i + 1:032x}-{0xC0FFEE + i:016x}-01" for i in range(3)]
            await asyncio.gather(
                *(
                    stub.ModelInfer(
                        build_request(
                            "digits",
                            {"x": np.full((1, 64), i, np.float32)},
                            request_id=f"request-{i}",
                        ),
                        metadata=(("traceparent", h),),
                    )
                    for i, h in enumerate(headers)
                )
            )
        await server.stop()
    await receiver.stop()
    return receiver.spans, receiver.times


def draw(spans: list[ReceivedSpan], times: dict[str, tuple[int, int]]) -> str:
    first_trace = f"{1:032x}"
    mine = [s for s in spans if s.trace_id == first_trace]
    root = next(s for s in mine if s.parent_span_id == f"{0xC0FFEE:016x}")
    batch = next(
        s for s in spans if s.name == "batch" and any(sid == root.span_id for _, sid in s.links)
    )
    start = min(times[s.span_id][0] for s in [*mine, batch])
    end = max(times[s.span_id][1] for s in [*mine, batch])
    scale = WIDTH / max(1, end - start)

    def bar(span: ReceivedSpan) -> str:
        s, e = times[span.span_id]
        left = int((s - start) * scale)
        width = max(1, int((e - s) * scale))
        return " " * left + "#" * width + " " * max(0, WIDTH - left - width)

    def ms(span: ReceivedSpan) -> str:
        s, e = times[span.span_id]
        return f"{(e - s) / 1e6:7.3f} ms"

    lines = [
        f"trace {first_trace} (the caller's), parent span {root.parent_span_id} (the caller's)",
        "",
        f"{'span':<48} {'':>10}  |{'time ->':<{WIDTH}}|",
    ]
    lines.append(f"{root.name:<48} {ms(root)}  |{bar(root)}|")
    children = sorted(
        (s for s in mine if s.parent_span_id == root.span_id), key=lambda s: times[s.span_id][0]
    )
    for child in children:
        extra = ""
        if child.name == "cache lookup":
            extra = f" hit={child.attributes.get('infergate.cache.hit')}"
        label = f"  └─ {child.name}{extra}"
        lines.append(f"{label:<48} {ms(child)}  |{bar(child)}|")
    label = f"batch ({len(batch.links)} requests linked, {batch.attributes.get('infergate.arm')})"
    lines.append(f"{label:<48} {ms(batch)}  |{bar(batch)}|")
    lines.append("")
    lines.append(
        "attributes of the backend span: "
        + ", ".join(
            f"{k}={v}"
            for k, v in sorted(next(s for s in children if s.name == "backend").attributes.items())
        )
    )
    lines.append(
        "the batch span links to: " + ", ".join(f"{t[:8]}…/{sid}" for t, sid in batch.links)
    )
    return "\n".join(lines)


def main() -> int:
    spans, times = asyncio.run(collect())
    print(draw(spans, times))
    return 0


if __name__ == "__main__":
    sys.exit(main())
