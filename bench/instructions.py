"""Instructions per request: the gateway (or the do-nothing floor) under callgrind.

On a noisy 2-core machine throughput moves 10-25% between identical runs, so a change
of a few percent in the request path cannot be seen in `make bench`. Instructions
counted by callgrind barely move (two runs of one commit agreed within 0.5%, at 16 in
flight and one at a time): this is how the request path's changes in
docs/performance.md were measured.

The server runs under `valgrind --tool=callgrind` with counting off; a client in this
process warms it up, turns counting on (`callgrind_control`), sends the requests
(batch-1 `mlp_small` of the peer section, bench/peer_models.py, at the given
concurrency), turns counting off and stops the server. The figure is every thread's
instructions over the counted requests: gRPC's, the event loop's, the runtime's.

    python -m bench.instructions [--requests 800] [--concurrency 16] [--floor]
        [--pythonpath OTHER_CHECKOUT]

needs valgrind (`apt-get install valgrind`); --pythonpath measures another checkout's
gateway (a git worktree of the commit to compare with) in the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import grpc
import numpy as np

from bench.config import ROOT
from bench.gateway_process import METRICS_OFF, serve_command, stop_process
from bench.peer_floor import FloorModel
from bench.peer_floor import command as floor_command
from bench.peer_models import (
    INPUT,
    MLP_SMALL,
    OUTPUT,
    model_config_text,
    write_mlp_small,
    write_model_folder,
)
from bench.serve_settings import MAX_BATCH_SIZE
from infergate.clients.infer_messages import build_request
from infergate.protocol import inference_pb2_grpc as pb_grpc

WARM_UP_REQUESTS = 50
START_TIMEOUT_S = 300.0  # everything is ~50x slower under valgrind, imports included
STOP_GRACE_S = 110.0
_TOTALS = re.compile(r"^(?:totals|summary):\s*(\d+)", re.MULTILINE)


class InstructionsError(RuntimeError):
    pass


FLOOR = FloorModel(
    MLP_SMALL.name, INPUT, MLP_SMALL.input_dims, OUTPUT, MLP_SMALL.output_dims, MAX_BATCH_SIZE
)


def _server_command(floor: bool, repository: Path, port_file: Path) -> list[str]:
    if floor:
        return floor_command(FLOOR, port_file)
    # `-m infergate.cli`, not the installed script: --pythonpath must decide which
    # checkout's gateway runs.
    return serve_command(
        repository, port_file, *METRICS_OFF, program=[sys.executable, "-m", "infergate.cli"]
    )


async def _drive(port: int, requests: int, concurrency: int, pid: int) -> None:
    values = np.random.default_rng(0).random((1, *MLP_SMALL.input_dims), np.float32)
    request = build_request(MLP_SMALL.name, {INPUT: values}, outputs=[OUTPUT])
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        for _ in range(WARM_UP_REQUESTS):
            await stub.ModelInfer(request)
        _instrument(pid, "on")

        async def caller(count: int) -> None:
            for _ in range(count):
                await stub.ModelInfer(request)

        share, extra = divmod(requests, concurrency)
        await asyncio.gather(*(caller(share + (i < extra)) for i in range(concurrency)))
        _instrument(pid, "off")


def _instrument(pid: int, state: str) -> None:
    done = subprocess.run(
        ["callgrind_control", "--instr=" + state, str(pid)], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise InstructionsError(f"callgrind_control --instr={state} failed: {done.stderr}")


def measure(
    requests: int, concurrency: int, floor: bool = False, pythonpath: str | None = None
) -> float:
    """Instructions per request, all threads of the server."""
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise InstructionsError("valgrind is not installed (apt-get install valgrind)")
    with tempfile.TemporaryDirectory(prefix="infergate-instructions-") as tmp:
        work = Path(tmp)
        repository = work / "repository"
        artifact = write_mlp_small(work / "models" / MLP_SMALL.name / "model.onnx")
        write_model_folder(
            repository, MLP_SMALL, artifact, model_config_text(MLP_SMALL, backend="onnxruntime")
        )
        port_file, out = work / "port", work / "callgrind.out"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (pythonpath, str(ROOT), env.get("PYTHONPATH")) if p
        )
        command = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={out}",
            *_server_command(floor, repository, port_file),
        ]
        with open(work / "server.log", "wb") as log:
            # cwd: `python -m` puts the working directory first on sys.path, ahead of
            # PYTHONPATH; run from the checkout, it would import that checkout always.
            server = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=work
            )
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while not (port_file.exists() and port_file.read_text().strip()):
                if server.poll() is not None or time.monotonic() > deadline:
                    tail = (work / "server.log").read_text(errors="replace")[-2000:]
                    raise InstructionsError(f"the server did not start:\n{tail}")
                time.sleep(0.5)
            asyncio.run(_drive(int(port_file.read_text()), requests, concurrency, server.pid))
        finally:
            stop_process(server, grace_s=STOP_GRACE_S)
        found = _TOTALS.findall(out.read_text(errors="replace")) if out.exists() else []
        if not found:
            raise InstructionsError(f"no totals in {out}")
        return int(found[-1]) / requests


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.instructions", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument("--requests", type=int, default=800)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--floor", action="store_true", help="measure the do-nothing floor")
    parser.add_argument("--pythonpath", help="a checkout whose gateway to measure instead")
    args = parser.parse_args(argv)
    try:
        per_request = measure(args.requests, args.concurrency, args.floor, args.pythonpath)
    except InstructionsError as exc:
        print(f"bench.instructions: {exc}", file=sys.stderr)
        return 1
    what = "floor" if args.floor else f"gateway{f' ({args.pythonpath})' if args.pythonpath else ''}"
    print(
        f"{what}: {per_request:,.0f} instructions per request "
        f"({args.requests} requests, {args.concurrency} in flight)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
