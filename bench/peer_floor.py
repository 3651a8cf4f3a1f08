"""The do-nothing floor: a grpc.aio server of the inference protocol that runs no model.

ModelInfer parses the request (any Python front end must) and answers with one fixed
response, serialized once at start-up; ModelStreamInfer answers each request on the
stream the same way, with the request's id (perf_analyzer matches streamed answers by
id). ServerLive/ServerReady/ModelReady, ServerMetadata, ModelMetadata and ModelConfig
describe one model with FP32 input and output, enough for perf_analyzer to run; and
ModelStatistics counts the requests answered (success and inference counts; no
executions, as it runs nothing), so the bench can give the floor's CPU per request
as it does a gateway's.

The server is set up as infergate's is (grpc.aio on one event loop, uvloop's when
installed as `infergate serve` chooses by default, no port sharing), without
interceptors: a Python front end does all of this and more, so on the same machine
its throughput can at best approach the floor's.

    python -m bench.peer_floor --model mlp_small --input x:256 --output y:10 \
        --max-batch-size 32 --port-file PORT_FILE [--event-loop auto|uvloop|asyncio]

binds 127.0.0.1 on a free port and writes the port to PORT_FILE once serving; SIGINT
or SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from bench.peer_process import ServerProcess, grpc_ready, server_process
from infergate.cli import event_loop_factory
from infergate.protocol import inference_pb2 as pb
from infergate.protocol import model_config_pb2 as mc
from infergate.settings import Settings, SettingsError

SERVICE = "inference.GRPCInferenceService"
_MB = 1024 * 1024


@dataclass(frozen=True)
class FloorModel:
    """The one model the floor describes: FP32 tensors, dims without the batch one."""

    name: str
    input_name: str
    input_dims: tuple[int, ...]
    output_name: str
    output_dims: tuple[int, ...]
    max_batch_size: int


@dataclass
class Counts:
    requests: int = 0


@dataclass
class Floor:
    """The handlers, over one FloorModel and one pre-serialized answer."""

    model: FloorModel
    counts: Counts = field(default_factory=Counts)

    def __post_init__(self) -> None:
        # One row of zeros: perf_analyzer sends batch-1 requests.
        elements = 1
        for d in self.model.output_dims:
            elements *= d
        response = pb.ModelInferResponse(model_name=self.model.name, model_version="1")
        response.outputs.add(
            name=self.model.output_name, datatype="FP32", shape=[1, *self.model.output_dims]
        )
        response.raw_output_contents.append(bytes(4 * elements))
        self.response = response
        self.answer = response.SerializeToString()
        self.stream_answer = pb.ModelStreamInferResponse(
            infer_response=response
        ).SerializeToString()

    # ---- inference -------------------------------------------------------------------

    async def model_infer(self, request: pb.ModelInferRequest, context: Any) -> bytes:
        self.counts.requests += 1
        return self.answer

    async def model_stream_infer(
        self, requests: AsyncIterator[pb.ModelInferRequest], context: Any
    ) -> AsyncIterator[bytes]:
        async for request in requests:
            self.counts.requests += 1
            if request.id:
                # Fields of a message serialized twice merge: the fixed answer plus
                # the id of this request.
                yield (
                    self.stream_answer
                    + pb.ModelStreamInferResponse(
                        infer_response=pb.ModelInferResponse(id=request.id)
                    ).SerializeToString()
                )
            else:
                yield self.stream_answer

    # ---- what perf_analyzer asks first ----------------------------------------------

    async def server_live(self, request: Any, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def server_ready(self, request: Any, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=True)

    async def model_ready(
        self, request: pb.ModelReadyRequest, context: Any
    ) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=request.name == self.model.name)

    async def server_metadata(self, request: Any, context: Any) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name="infergate-bench-floor", version="0")

    async def _known(self, name: str, context: Any) -> None:
        if name != self.model.name:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no model {name!r}")

    async def model_metadata(
        self, request: pb.ModelMetadataRequest, context: Any
    ) -> pb.ModelMetadataResponse:
        await self._known(request.name, context)
        m = self.model
        batch = [-1] if m.max_batch_size > 0 else []
        response = pb.ModelMetadataResponse(name=m.name, versions=["1"], platform="floor")
        response.inputs.add(name=m.input_name, datatype="FP32", shape=[*batch, *m.input_dims])
        response.outputs.add(name=m.output_name, datatype="FP32", shape=[*batch, *m.output_dims])
        return response

    async def model_config(
        self, request: pb.ModelConfigRequest, context: Any
    ) -> pb.ModelConfigResponse:
        await self._known(request.name, context)
        m = self.model
        config = mc.ModelConfig(name=m.name, platform="floor", max_batch_size=m.max_batch_size)
        config.input.add(name=m.input_name, data_type=mc.TYPE_FP32, dims=list(m.input_dims))
        config.output.add(name=m.output_name, data_type=mc.TYPE_FP32, dims=list(m.output_dims))
        return pb.ModelConfigResponse(config=config)

    async def model_statistics(
        self, request: pb.ModelStatisticsRequest, context: Any
    ) -> pb.ModelStatisticsResponse:
        if request.name and request.name != self.model.name:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no model {request.name!r}")
        n = self.counts.requests
        stats = pb.ModelStatistics(
            name=self.model.name,
            version="1",
            last_inference=int(time.time() * 1000) if n else 0,
            inference_count=n,
            # It runs nothing: no executions, so no batch size to report.
            execution_count=0,
        )
        stats.inference_stats.success.count = n
        return pb.ModelStatisticsResponse(model_stats=[stats])

    # ---- the server ------------------------------------------------------------------

    def handler(self) -> grpc.GenericRpcHandler:
        def raw(data: bytes) -> bytes:
            return data

        def unary(method: Any, request_type: Any, response_type: Any | None = None) -> Any:
            return grpc.unary_unary_rpc_method_handler(
                method,
                request_deserializer=request_type.FromString,
                response_serializer=raw
                if response_type is None
                else response_type.SerializeToString,
            )

        handlers = {
            "ModelInfer": unary(self.model_infer, pb.ModelInferRequest),
            "ModelStreamInfer": grpc.stream_stream_rpc_method_handler(
                self.model_stream_infer,
                request_deserializer=pb.ModelInferRequest.FromString,
                response_serializer=raw,
            ),
            "ServerLive": unary(self.server_live, pb.ServerLiveRequest, pb.ServerLiveResponse),
            "ServerReady": unary(self.server_ready, pb.ServerReadyRequest, pb.ServerReadyResponse),
            "ModelReady": unary(self.model_ready, pb.ModelReadyRequest, pb.ModelReadyResponse),
            "ServerMetadata": unary(
                self.server_metadata, pb.ServerMetadataRequest, pb.ServerMetadataResponse
            ),
            "ModelMetadata": unary(
                self.model_metadata, pb.ModelMetadataRequest, pb.ModelMetadataResponse
            ),
            "ModelConfig": unary(self.model_config, pb.ModelConfigRequest, pb.ModelConfigResponse),
            "ModelStatistics": unary(
                self.model_statistics, pb.ModelStatisticsRequest, pb.ModelStatisticsResponse
            ),
        }
        return grpc.method_handlers_generic_handler(SERVICE, handlers)


def make_server(floor: Floor, host: str = "127.0.0.1") -> tuple[grpc.aio.Server, int]:
    """The floor's grpc.aio server bound to a free port on `host` (not started)."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", 64 * _MB),
            ("grpc.max_send_message_length", 64 * _MB),
            ("grpc.so_reuseport", 0),
        ]
    )
    server.add_generic_rpc_handlers((floor.handler(),))
    port = server.add_insecure_port(f"{host}:0")
    return server, port


async def serve(model: FloorModel, port_file: Path | None) -> None:
    server, port = make_server(Floor(model))
    await server.start()
    if port_file is not None:
        tmp = port_file.with_suffix(".tmp")
        tmp.write_text(str(port))
        tmp.replace(port_file)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    await stopping.wait()
    await server.stop(grace=1.0)


# ---- started by the bench -----------------------------------------------------------------


def _dims(text: str) -> tuple[str, tuple[int, ...]]:
    name, _, dims = text.partition(":")
    try:
        return name, tuple(int(d) for d in dims.split(",") if d)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"want NAME:D1,D2,..., got {text!r}") from exc


def command(model: FloorModel, port_file: Path, event_loop: str = "auto") -> list[str]:
    return [
        sys.executable,
        "-m",
        "bench.peer_floor",
        "--model",
        model.name,
        "--input",
        f"{model.input_name}:{','.join(map(str, model.input_dims))}",
        "--output",
        f"{model.output_name}:{','.join(map(str, model.output_dims))}",
        "--max-batch-size",
        str(model.max_batch_size),
        "--port-file",
        str(port_file),
        "--event-loop",
        event_loop,
    ]


@contextmanager
def floor_server(
    model: FloorModel, log_path: Path, event_loop: str = "auto"
) -> Iterator[ServerProcess]:
    """The floor in a process of its own (this file run as a module), ready to serve."""
    from bench.config import ROOT

    port_file = log_path.with_suffix(".port")
    with server_process(
        "do-nothing floor",
        command(model, port_file, event_loop),
        log_path,
        port_file=port_file,
        ready=lambda s: grpc_ready(s.url, [model.name]),
        ready_timeout_s=60.0,
        stop_timeout_s=10.0,
        env=_env_with_root(ROOT),
    ) as server:
        yield server


def _env_with_root(root: Path) -> dict[str, str]:
    """This environment, with the checkout on PYTHONPATH so `-m bench.peer_floor`
    imports from any working directory."""
    import os

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(root), env.get("PYTHONPATH"))))
    return env


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.peer_floor", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument("--model", required=True)
    parser.add_argument("--input", type=_dims, required=True, help="NAME:D1,D2 (no batch dim)")
    parser.add_argument("--output", type=_dims, required=True, help="NAME:D1,D2 (no batch dim)")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--port-file", type=Path)
    parser.add_argument(
        "--event-loop",
        choices=("auto", "uvloop", "asyncio"),
        default="auto",
        help="auto (the default, as infergate serve's): uvloop's when installed",
    )
    args = parser.parse_args(argv)
    model = FloorModel(
        args.model,
        args.input[0],
        args.input[1],
        args.output[0],
        args.output[1],
        args.max_batch_size,
    )
    # The loop `infergate serve --event-loop` would run on: a floor on a slower loop
    # than the gateway's would not be the least a Python front end costs.
    try:
        loop_factory = event_loop_factory(Settings(event_loop=args.event_loop))
    except SettingsError as exc:
        raise SystemExit(f"--event-loop {args.event_loop}: {exc}") from None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve(model, args.port_file))
    return 0


if __name__ == "__main__":
    sys.exit(main())
