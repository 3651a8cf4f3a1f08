"""An OTLP/gRPC trace receiver in a process of its own, counting what it gets.

    python -m bench.otlp_sink --port-file P --counts-file C

Writes the port it listens on to P once serving; on SIGTERM or SIGINT writes
{"spans": n, "exports": m} to C and exits. The tracing bench runs it beside the
gateway as a collector on the same host would run: a separate process, so its work
never shares the bench's (or the gateway's) interpreter lock.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as otlp

from tests.otlp_receiver import Receiver


@dataclass
class CountingReceiver(Receiver):
    """The tests' OTLP receiver, counting spans instead of keeping them.

    Converting every span to Python objects would take CPU from the gateway that
    shares this machine; counting is enough to prove the export happened.
    """

    span_count: int = 0

    async def Export(
        self,
        request: otlp.ExportTraceServiceRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> otlp.ExportTraceServiceResponse:
        self.exports += 1
        self.span_count += sum(
            len(scope.spans) for rs in request.resource_spans for scope in rs.scope_spans
        )
        return otlp.ExportTraceServiceResponse()


async def serve(port_file: Path, counts_file: Path) -> None:
    receiver = CountingReceiver()
    await receiver.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tmp = port_file.with_suffix(".tmp")
    tmp.write_text(str(receiver.port))
    tmp.replace(port_file)
    await stop.wait()
    await receiver.stop()
    counts_file.write_text(json.dumps({"spans": receiver.span_count, "exports": receiver.exports}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port-file", type=Path, required=True)
    parser.add_argument("--counts-file", type=Path, required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.port_file, args.counts_file))


if __name__ == "__main__":
    main()
