"""Section "cache": end-to-end latency of response-cache hits vs misses over loopback.

A twin of digits with `response_cache { enable: true }` (no dynamic batching, so a
miss never waits for a batch to fill) is served by one gateway with default flags.
From this process, requests go one after another (one in flight):

- hit: the same request repeated; every call after the first is a hit;
- miss: every request distinct (fresh random inputs), so every call is a miss.

Two clients: the raw gRPC stub on bytes (requests serialized before the clock starts,
responses left as bytes: the leanest Python client, so the figure is the gateway and
the transport) and `infergate.clients.Client` (builds the protobuf from numpy and
decodes the answer: what a Python user sees). The hit ratio is the server's own, from
ModelStatistics (cache_hit / (cache_hit + cache_miss)) over each run.

Target (issue 4; docs/benchmark-results.md): hit p50 well under a millisecond.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from bench.config import BenchConfig
from bench.gateway_process import GatewayError, gateway
from bench.model_counts import read_counts
from bench.progress import log
from bench.report import Column, Section, first_line, mark, num, ratio, times
from bench.rotating_calls import timed_rounds
from bench.twin_repository import RepositoryError, Twin, make_repository
from infergate.clients import Client, build_request
from infergate.protocol import inference_pb2 as pb

SOURCE = "digits"
HIT_MODEL = "digits_cache_hit"
MISS_MODEL = "digits_cache_miss"
RAW = "raw stub"
CLIENTS = (RAW, "Client")
INFER_METHOD = "/inference.GRPCInferenceService/ModelInfer"
LIVE_METHOD = "/inference.GRPCInferenceService/ServerLive"
FLOOR = "ServerLive (no inference)"
TARGET_HIT_P50_US = 1000.0
WARM_UP = 200

COLUMNS = [
    Column("client", "client"),
    Column("requests", "case"),
    Column("n", "n", num(0)),
    Column("p50 (us)", "p50_us", num(0)),
    Column("p90 (us)", "p90_us", num(0)),
    Column("p99 (us)", "p99_us", num(0)),
    Column("p50 over floor (us)", "over_floor_us", num(0)),
    Column("server hit ratio", "hit_ratio", lambda v: f"{float(v):.4f}"),
    Column("p50 hit/miss", "hit_miss_p50", times()),
    Column("target", "target"),
    Column("note", "note"),
]


def requests_per_case(window_ms: int) -> int:
    """A few thousand with the default window (2000 ms), fewer for quick runs."""
    return max(500, min(5000, int(window_ms * 1.5)))


def cache_section(config: BenchConfig, workdir: Path) -> Section:
    n = requests_per_case(config.window_ms)
    section = Section(
        key="cache",
        title="Response cache: hit vs miss latency, end to end over loopback",
        description=(
            f"Two twins of {SOURCE} with `response_cache {{ enable: true }}` and no dynamic "
            f"batching (`{HIT_MODEL}`, `{MISS_MODEL}`), pinned to onnxruntime; one gateway, "
            "default flags. From the "
            f"bench process, {n:,} rounds of sequential calls (one in flight), each round "
            f"one call of every row in turn, so drift on a busy machine hits all rows alike: "
            f"*same* repeats one request to `{HIT_MODEL}` (hits after the first), *distinct* "
            f"sends fresh random inputs to `{MISS_MODEL}` (all misses), *{FLOOR}* is the "
            "floor: the same gRPC round trip with nothing behind it. *raw stub*: the "
            "generated method path called on pre-serialized request bytes, the response "
            "left as bytes (the leanest Python client, so the figure is the gateway and the "
            "transport); *Client*: `infergate.clients.Client` with numpy in and out (what a "
            "Python user sees). The hit ratio is the server's (ModelStatistics), over the "
            "timed calls."
        ),
        columns=COLUMNS,
    )
    repository = workdir / "cache-repository"
    twins = {name: Twin(SOURCE, response_cache=True) for name in (HIT_MODEL, MISS_MODEL)}
    try:
        make_repository(repository, twins, config.repository)
    except (RepositoryError, OSError) as exc:
        section.rows.append({"client": "-", "error": str(exc), "note": f"error: {exc}"})
        return section
    try:
        with gateway(repository, workdir / "cache-gateway.log", serve_args=config.serve_args) as gw:
            for seed, client in enumerate(CLIENTS):
                # A seed per client: the second must not find the first's answers cached.
                section.rows.extend(_rows(gw.url, client, n, seed))
                gw.check_alive()
    except GatewayError as exc:
        section.notes.append(f"**gateway failed:** {exc}")
        log(f"gateway failed: {exc}")
    _compare(section)
    section.remarks.append(
        f"Target (issue 4): hit p50 well under {TARGET_HIT_P50_US:,.0f} us end to end. The "
        f"miss path of {SOURCE} is cheap too (a 64-64-10 MLP runs in tens of microseconds), "
        "so hit/miss shows what the cache saves beyond compute: the batch queue and the "
        "worker-thread hop. *p50 over floor* is what the gateway adds to a bare gRPC round "
        "trip."
    )
    return section


def _rows(url: str, client: str, n: int, seed: int) -> list[dict[str, Any]]:
    """Rows same, distinct and floor for one client, measured interleaved."""
    cases = ("same", "distinct", FLOOR)
    rows: dict[str, dict[str, Any]] = {c: {"client": client, "case": c, "n": n} for c in cases}
    log(f"  {client}: {n:,} rounds of same / distinct / {FLOOR} ...")
    rng = np.random.default_rng(seed)
    same = rng.random((1, 64), dtype=np.float32)
    distinct = [rng.random((1, 64), dtype=np.float32) for _ in range(n + WARM_UP)]
    try:
        with _calls(client, url, same, distinct) as calls:
            for i in range(WARM_UP):
                for call in calls:
                    call(i)
            before = {m: read_counts(url, m) for m in (HIT_MODEL, MISS_MODEL)}
            latencies_ns = timed_rounds(calls, WARM_UP, n)
            after = {m: read_counts(url, m) for m in (HIT_MODEL, MISS_MODEL)}
    except (grpc.RpcError, RuntimeError) as exc:
        log(f"  {client}: failed: {exc}")
        for row in rows.values():
            row.update(error=str(exc), note=f"error: {first_line(exc)}")
        return list(rows.values())
    for case, model in (("same", HIT_MODEL), ("distinct", MISS_MODEL)):
        delta = after[model] - before[model]
        rows[case].update(
            hit_ratio=delta.hit_ratio, cache_hits=delta.cache_hits, cache_misses=delta.cache_misses
        )
    for case, ns in zip(cases, latencies_ns, strict=True):
        us = np.asarray(ns, dtype=np.float64) / 1000
        row = rows[case]
        row.update(
            p50_us=float(np.percentile(us, 50)),
            p90_us=float(np.percentile(us, 90)),
            p99_us=float(np.percentile(us, 99)),
            mean_us=float(us.mean()),
        )
        hits = row.get("hit_ratio")
        log(
            f"  {client}, {case}: p50 {row['p50_us']:,.0f} us, p90 {row['p90_us']:,.0f} us, "
            f"p99 {row['p99_us']:,.0f} us"
            + ("" if hits is None else f", server hit ratio {hits:.4f}")
        )
    return list(rows.values())


@contextmanager
def _calls(
    client: str, url: str, same: np.ndarray, distinct: list[np.ndarray]
) -> Iterator[list[Callable[[int], object]]]:
    """Callables for same, distinct and floor; call i of distinct sends input i."""
    if client == RAW:
        with grpc.insecure_channel(url) as channel:
            # No serializers: bytes in, bytes out.
            infer: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(INFER_METHOD)
            live: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(LIVE_METHOD)
            hit = build_request(HIT_MODEL, {"x": same}).SerializeToString()
            misses = [build_request(MISS_MODEL, {"x": x}).SerializeToString() for x in distinct]
            live_request = pb.ServerLiveRequest().SerializeToString()
            yield [
                lambda i: infer(hit, timeout=10),
                lambda i: infer(misses[i], timeout=10),
                lambda i: live(live_request, timeout=10),
            ]
        return
    with Client(url, timeout_s=10) as c:
        hit_inputs = {"x": same}
        yield [
            lambda i: c.infer(HIT_MODEL, hit_inputs),
            lambda i: c.infer(MISS_MODEL, {"x": distinct[i]}),
            lambda i: c.is_server_live(),
        ]


def _compare(section: Section) -> None:
    """p50 over the floor on each row; hit/miss p50 and the target on each hit row."""
    by_key = {(r["client"], r.get("case")): r for r in section.rows}
    for row in section.rows:
        floor = by_key.get((row["client"], FLOOR), {}).get("p50_us")
        if floor is not None and row.get("p50_us") is not None and row.get("case") != FLOOR:
            row["over_floor_us"] = row["p50_us"] - floor
    for client in CLIENTS:
        hit, miss = by_key.get((client, "same")), by_key.get((client, "distinct"))
        if hit is None or hit.get("p50_us") is None:
            continue
        verdict = mark(hit["p50_us"], at_most=TARGET_HIT_P50_US)
        hit["target"] = f"hit p50 < {TARGET_HIT_P50_US:,.0f} us: {verdict}"
        if miss is not None:
            hit["hit_miss_p50"] = ratio(hit["p50_us"], miss.get("p50_us"))
