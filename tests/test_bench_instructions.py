"""bench.instructions: the gateway and the do-nothing floor under callgrind, for real."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.instructions import InstructionsError, measure


def test_instructions_per_request_of_the_gateway_and_of_the_floor() -> None:
    floor = measure(requests=60, concurrency=4, floor=True)
    gateway = measure(requests=60, concurrency=4)
    # grpc.aio alone costs ~300,000 a request; the gateway ~1,000,000 (docs/performance.md).
    assert 100_000 < floor < gateway < 5_000_000, (floor, gateway)


def test_pythonpath_decides_which_checkout_runs(tmp_path: Path) -> None:
    # A checkout whose infergate cannot be imported: measuring it must fail with its
    # error, not quietly measure this checkout's gateway instead.
    package = tmp_path / "infergate"
    package.mkdir()
    (package / "__init__.py").write_text('raise ImportError("the other checkout ran")\n')
    with pytest.raises(InstructionsError, match="the other checkout ran"):
        measure(requests=10, concurrency=1, pythonpath=str(tmp_path))
