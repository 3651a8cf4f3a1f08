"""Section "scaleout": what sharing costs and buys across replicas, end to end over gRPC.

A redis-server on a free loopback port; gateways started through the CLI with
`--cache-redis-url` and `--registry-redis-url` on one repository; HAProxy
(deploy/haproxy/haproxy.cfg) in front. Measured:

- **latency** (p50/p99, sequential calls from this process, raw stub on
  pre-serialized bytes, straight to replica A): a *local hit* (the same request
  again: A's in-process LRU), a *Redis hit* (a request replica B computed, asked of A
  for the first time: A's LRU misses, Redis has it), a *miss* (a new request: one
  Redis round trip, then the model), and the gRPC floor (ServerLive), interleaved
  round by round so drift on a busy machine hits every row alike;
- **throughput** through HAProxy with 1 and 2 replicas (perf_analyzer over gRPC, a
  twin of digits without the response cache so that every call is computed), and
  straight to one replica for the proxy's own cost;
- **propagation** of a registration: a new version registered on A, the time until
  B answers ModelReady for it; and what `wait_replicas_s` adds to the call.

    python -m bench.run --repository models/repository --sections scaleout
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import statistics
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from bench.config import ROOT, BenchConfig
from bench.gateway_process import Gateway, GatewayError, gateway
from bench.model_counts import read_counts
from bench.perf_analyzer import PerfAnalyzerError, measure_logged
from bench.progress import log
from bench.report import Column, Section, first_line, num
from bench.rotating_calls import timed_rounds
from bench.twin_repository import RepositoryError, Twin, make_repository
from infergate.clients import build_request
from infergate.clients.admin_client import AdminClient
from infergate.protocol import inference_pb2 as pb
from infergate.protocol import model_config_pb2 as mc

SOURCE = "digits"
CACHED = "digits_shared"  # response cache on, no batching: latency rows
COMPUTED = "digits_computed"  # no cache, the source's batching: throughput rows
PROPAGATED = "digits_propagated"  # registered again and again: propagation rows
HAPROXY_CONFIG = ROOT / "deploy" / "haproxy" / "haproxy.cfg"
INFER_METHOD = "/inference.GRPCInferenceService/ModelInfer"
LIVE_METHOD = "/inference.GRPCInferenceService/ServerLive"
CASES = ("local hit", "Redis hit", "miss", "ServerLive (floor)")
PROPAGATION_ROUNDS = 5
WARM_UP = 100

COLUMNS = [
    Column("measure", "measure"),
    Column("case", "case"),
    Column("replicas", "replicas"),
    Column("concurrency", "concurrency"),
    Column("n", "n", num(0)),
    Column("p50", "p50", lambda v: f"{float(v):,.0f} us"),
    Column("p99", "p99", lambda v: f"{float(v):,.0f} us"),
    Column("max", "max", lambda v: f"{float(v):,.0f} us"),
    Column("infer/s", "throughput", num(0)),
    Column("note", "note"),
]


def scaleout_section(config: BenchConfig, workdir: Path) -> Section:
    n = max(300, min(3000, config.window_ms))
    section = Section(
        key="scaleout",
        title="Scale-out: shared cache tier, replicas behind HAProxy, registry propagation",
        description=(
            "A loopback redis-server, `infergate serve` replicas sharing it "
            "(`--cache-redis-url`, `--registry-redis-url`) and one repository, HAProxy with "
            "deploy/haproxy/haproxy.cfg in front, all on this machine (the client too). "
            f"*latency*: {n:,} rounds of sequential raw-stub calls straight to replica A of "
            f"`{CACHED}` (a twin of {SOURCE} with the response cache on, no batching): a local "
            "hit (A's LRU), a Redis hit (computed by replica B, first asked of A), a miss (new "
            "inputs), and ServerLive as the gRPC floor. *throughput*: perf_analyzer on "
            f"`{COMPUTED}` (no cache: every call computed) through HAProxy with 1 and 2 "
            "replicas, and straight to one. *propagation*: a new version of "
            f"`{PROPAGATED}` registered on A ({PROPAGATION_ROUNDS} times), the time until B "
            "answers ModelReady for it; and the registration call with and without "
            "`wait_replicas_s`."
        ),
        columns=COLUMNS,
    )
    redis_server, haproxy = shutil.which("redis-server"), _haproxy_path()
    if redis_server is None or haproxy is None:
        section.notes.append("**needs redis-server and haproxy** (`make system-deps`)")
        return section
    repository = workdir / "scaleout-repository"
    try:
        make_repository(
            repository,
            {
                CACHED: Twin(SOURCE, response_cache=True),
                COMPUTED: Twin(SOURCE, queue_delay_us=1000),
            },
            config.repository,
        )
    except (RepositoryError, OSError) as exc:
        section.notes.append(f"**cannot build the repository:** {exc}")
        return section
    try:
        with _redis(redis_server, workdir) as redis_url:
            args = [
                "--cache-redis-url", redis_url,
                "--registry-redis-url", redis_url,
                "--insecure-admin",
                *config.serve_args,
            ]  # fmt: skip
            with (
                gateway(
                    repository,
                    workdir / "scaleout-a.log",
                    serve_args=[*args, "--replica-id", "replica-a"],
                ) as a,
                gateway(
                    repository,
                    workdir / "scaleout-b.log",
                    serve_args=[*args, "--replica-id", "replica-b"],
                ) as b,
            ):
                section.rows.extend(_latency_rows(a, b, n))
                section.rows.extend(_throughput_rows(config, haproxy, a, b, workdir))
                section.rows.extend(_propagation_rows(config, a, b))
                a.check_alive()
                b.check_alive()
    except (GatewayError, OSError, RuntimeError) as exc:
        section.notes.append(f"**failed:** {exc}")
        log(f"scaleout failed: {exc}")
    section.remarks.append(
        "On this 2-core machine the client, HAProxy, Redis and both replicas share the same "
        "two cores, so a second replica adds no cores; what it can add is a second event "
        "loop: one replica's request path runs on one Python thread and leaves part of "
        "the cores idle, which is why 2 replicas can beat 1 here at all. On machines with "
        "a core budget per replica, "
        "throughput should grow close to linearly with replicas until the proxy or the "
        "clients saturate; the proxy's own cost is the difference between *direct* and "
        "*1 replica* at the same concurrency. A Redis hit costs about one Redis round trip "
        "more than a local hit, and saves the model call; a miss pays one Redis round trip "
        "before computing and one write after it, before the answer goes out."
    )
    return section


# ---- latency ---------------------------------------------------------------------------


def _latency_rows(a: Gateway, b: Gateway, n: int) -> list[dict[str, Any]]:
    log(f"  latency: {n:,} rounds of local hit / Redis hit / miss / floor on replica A ...")
    rng = np.random.default_rng(18)
    same = build_request(CACHED, {"x": rng.random((1, 64), dtype=np.float32)})
    shared = [
        build_request(CACHED, {"x": rng.random((1, 64), dtype=np.float32)}).SerializeToString()
        for _ in range(n + WARM_UP)
    ]
    fresh = [
        build_request(CACHED, {"x": rng.random((1, 64), dtype=np.float32)}).SerializeToString()
        for _ in range(n + WARM_UP)
    ]
    rows = [{"measure": "latency", "case": case, "replicas": 2, "n": n} for case in CASES]
    try:
        with grpc.insecure_channel(b.url) as channel:
            infer_b: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(INFER_METHOD)
            for request in shared:  # B computes them: in Redis for A
                infer_b(request, timeout=10)
        before = read_counts(a.url, CACHED)
        with grpc.insecure_channel(a.url) as channel:
            infer: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(INFER_METHOD)
            live: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(LIVE_METHOD)
            hit = same.SerializeToString()
            floor = pb.ServerLiveRequest().SerializeToString()
            calls = [
                lambda i: infer(hit, timeout=10),
                lambda i: infer(shared[i], timeout=10),
                lambda i: infer(fresh[i], timeout=10),
                lambda i: live(floor, timeout=10),
            ]
            for i in range(WARM_UP):
                for call in calls:
                    call(i)
            latencies = timed_rounds(calls, WARM_UP, n)
        counts = read_counts(a.url, CACHED) - before
    except (grpc.RpcError, RuntimeError) as exc:
        log(f"  latency failed: {exc}")
        for row in rows:
            row.update(error=str(exc), note=f"error: {first_line(exc)}")
        return rows
    for row, ns in zip(rows, latencies, strict=True):
        us = np.asarray(ns, dtype=np.float64) / 1000
        row.update(
            p50=float(np.percentile(us, 50)),
            p99=float(np.percentile(us, 99)),
            max=float(us.max()),
        )
        log(f"  {row['case']}: p50 {row['p50']:,.0f} us, p99 {row['p99']:,.0f} us")
    # Every Redis-hit call is a hit on A, and only the misses were computed there.
    # A computed the misses and the first local hit: anything more is a Redis hit missed.
    rows[1]["note"] = f"A computed {counts.inference_count - n - WARM_UP - 1} of them"
    rows[2]["note"] = f"A's hit ratio over the run {counts.hit_ratio or 0:.3f}"
    return rows


# ---- throughput ------------------------------------------------------------------------


def _throughput_rows(
    config: BenchConfig, haproxy: str, a: Gateway, b: Gateway, workdir: Path
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    # perf_analyzer reads ModelStatistics before and after a window; through the proxy
    # the two may come from different replicas, and without a version it then stops
    # ("failed to find the requested model version"). Its server-side figures are one
    # replica's anyway: only the client's count here.
    settings = config.perf_settings()
    settings["extra_args"] = (*settings["extra_args"], "-x", "1")
    # No second replica: a port nobody listens on, which the proxy marks down.
    setups = (
        ("direct", 1, None),
        ("HAProxy", 1, f"127.0.0.1:{_free_port()}"),
        ("HAProxy", 2, b.url),
    )
    for case, replicas, second in setups:
        for concurrency in config.concurrency:
            row: dict[str, Any] = {
                "measure": "throughput",
                "case": case,
                "replicas": replicas,
                "concurrency": concurrency,
            }
            try:
                with contextlib.ExitStack() as stack:
                    url = a.url
                    if second is not None:
                        url = stack.enter_context(
                            _proxy(haproxy, workdir, (a.url, second), up=replicas)
                        )
                    result = measure_logged(
                        f"{case}, {replicas} replica(s), concurrency {concurrency}",
                        url,
                        COMPUTED,
                        workdir / f"scaleout-{case}-{replicas}-c{concurrency}.csv",
                        concurrency=concurrency,
                        **settings,
                    )
            except (PerfAnalyzerError, RuntimeError) as exc:
                row.update(error=str(exc), note=f"error: {first_line(exc)}")
                rows.append(row)
                continue
            row.update(
                throughput=result.throughput,
                p50=result.p50_us,
                p99=result.p99_us,
                note="" if result.stable else "unstable",
            )
            rows.append(row)
    return rows


@contextlib.contextmanager
def _proxy(haproxy: str, workdir: Path, servers: tuple[str, str], up: int) -> Iterator[str]:
    """HAProxy with the shipped config in front of `servers`; its address once `up` of
    them are in the rotation."""
    port, stats = _free_port(), workdir / "scaleout-haproxy.sock"
    extra = workdir / "scaleout-haproxy-extra.cfg"
    extra.write_text(f"global\n    stats socket {stats} mode 600 level admin\n")
    env = {
        **os.environ,
        "INFERGATE_PROXY_BIND": f"127.0.0.1:{port}",
        "INFERGATE_PROXY_METRICS_BIND": f"127.0.0.1:{_free_port()}",
        "INFERGATE_GATEWAY_1": servers[0],
        "INFERGATE_GATEWAY_2": servers[1],
        "INFERGATE_PROXY_CHECK_INTERVAL": "200ms",
    }
    log_path = workdir / "scaleout-haproxy.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [haproxy, "-db", "-f", str(HAPROXY_CONFIG), "-f", str(extra)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        deadline = time.monotonic() + 15
        while _servers_up(stats) < up:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"HAProxy did not start:\n{log_path.read_text()[-2000:]}")
            time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _servers_up(stats: Path) -> int:
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(stats))
            s.sendall(b"show servers state infergate\n")
            text = b""
            while chunk := s.recv(65536):
                text += chunk
    except OSError:
        return 0
    rows = [line.split() for line in text.decode().splitlines()[1:] if line and line[0] != "#"]
    return sum(1 for row in rows if len(row) > 5 and row[5] == "2")  # srv_op_state: running


# ---- propagation ---------------------------------------------------------------------------


def _propagation_rows(config: BenchConfig, a: Gateway, b: Gateway) -> list[dict[str, Any]]:
    artifact = config.repository / SOURCE / "1" / "model.onnx"
    model_config = mc.ModelConfig(name=PROPAGATED, max_batch_size=64, backend="onnxruntime")
    model_config.input.add(name="x", data_type=mc.TYPE_FP32, dims=[64])
    model_config.output.add(name="y", data_type=mc.TYPE_FP32, dims=[10])
    seen_ms: list[float] = []
    plain_ms: list[float] = []
    waited_ms: list[float] = []
    log(f"  propagation: {PROPAGATION_ROUNDS} registrations on A, watched on B ...")
    try:
        with (
            AdminClient(a.url, timeout_s=60) as admin,
            grpc.insecure_channel(b.url) as channel,
        ):
            ready = channel.unary_unary(
                "/inference.GRPCInferenceService/ModelReady",
                request_serializer=pb.ModelReadyRequest.SerializeToString,
                response_deserializer=pb.ModelReadyResponse.FromString,
            )
            files = {"model.onnx": artifact}
            for _ in range(PROPAGATION_ROUNDS):
                started = time.perf_counter()
                response = admin.register(PROPAGATED, files, model_config)
                registered = time.perf_counter()
                plain_ms.append((registered - started) * 1e3)
                request = pb.ModelReadyRequest(name=PROPAGATED, version=response.version)
                deadline = registered + 30
                while not ready(request, timeout=10).ready:
                    if time.perf_counter() > deadline:
                        raise RuntimeError(f"B never served version {response.version}")
                    time.sleep(0.001)
                seen_ms.append((time.perf_counter() - registered) * 1e3)
            for _ in range(PROPAGATION_ROUNDS):
                started = time.perf_counter()
                admin.register(PROPAGATED, files, model_config, wait_replicas_s=30)
                waited_ms.append((time.perf_counter() - started) * 1e3)
    except (grpc.RpcError, RuntimeError, OSError) as exc:
        log(f"  propagation failed: {exc}")
        return [
            {
                "measure": "propagation",
                "case": "registration seen on B",
                "error": str(exc),
                "note": f"error: {first_line(exc)}",
            }
        ]
    rows = []
    for case, values, note in (
        ("registered on A until B serves it", seen_ms, "after A's call returned"),
        ("RegisterModel call on A", plain_ms, "upload, load, warm-up, commit"),
        ("RegisterModel, wait_replicas_s", waited_ms, "until A and B serve it"),
    ):
        rows.append(
            {
                "measure": "propagation",
                "case": case,
                "replicas": 2,
                "n": len(values),
                "p50": statistics.median(values) * 1e3,
                "max": max(values) * 1e3,
                "note": note,
            }
        )
        log(f"  {case}: median {statistics.median(values):.1f} ms, max {max(values):.1f} ms")
    return rows


# ---- helpers -----------------------------------------------------------------------------


@contextlib.contextmanager
def _redis(redis_server: str, workdir: Path) -> Iterator[str]:
    port = _free_port()
    log_path = workdir / "scaleout-redis.log"
    command = [
        redis_server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
        "--appendonly", "no",
    ]  # fmt: skip
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start:\n{log_path.read_text()}")
            time.sleep(0.05)
        log(f"redis-server on 127.0.0.1:{port}")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _haproxy_path() -> str | None:
    found = shutil.which("haproxy")
    if found is None and Path("/usr/sbin/haproxy").exists():
        return "/usr/sbin/haproxy"
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
