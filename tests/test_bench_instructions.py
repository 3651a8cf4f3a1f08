"""bench.instructions: the gateway and the do-nothing floor under callgrind, for real."""

from __future__ import annotations

from bench.instructions import measure


def test_instructions_per_request_of_the_gateway_and_of_the_floor() -> None:
    floor = measure(requests=60, concurrency=4, floor=True)
    gateway = measure(requests=60, concurrency=4)
    # grpc.aio alone costs ~300,000 a request; the gateway ~1,000,000 (docs/performance.md).
    assert 100_000 < floor < gateway < 5_000_000, (floor, gateway)
