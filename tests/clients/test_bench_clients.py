"""bench/clients.py measures every client it names (a few calls: that it works, not how fast)."""

from __future__ import annotations

from bench.clients import CLIENTS, compare_clients, markdown_table
from tests.clients.conftest import LiveGateway


def test_every_client_is_measured(live_gateway: LiveGateway) -> None:
    figures = compare_clients(live_gateway.url, calls=5)
    assert [f.client for f in figures] == list(CLIENTS)
    for f in figures:
        assert f.calls == 5 and 0 < f.p50_ms <= f.p99_ms and f.calls_per_s > 0
    table = markdown_table(figures)
    assert table.count("\n") == len(CLIENTS) + 1 and "tritonclient" in table
