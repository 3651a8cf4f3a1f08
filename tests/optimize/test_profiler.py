"""The in-process profiler and its report."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import pytest

from infergate.backends.base import LoadedModel, WrappedModel
from infergate.backends.onnxruntime import OnnxRuntimeBackend
from infergate.optimize import (
    Measurement,
    ProfileArm,
    ProfileSettings,
    choose_best,
    profile_arms,
    random_dataset,
    summarize,
    write_report,
)
from infergate.schema.errors import InvalidInput
from tests.conftest import DEMO_REPOSITORY
from tests.optimize.conftest import DIGITS_SPEC, OPTIONS

QUICK = ProfileSettings(
    batch_sizes=(1, 8), concurrency=(1, 2), duration_s=0.05, min_calls=5, warmup_calls=1
)


class Slow(WrappedModel):
    """The same model, 5 ms slower per call: an arm that is clearly worse."""

    def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        time.sleep(0.005)
        return self.inner.infer(inputs)


@pytest.fixture(scope="module")
def digits() -> Iterator[LoadedModel]:
    model = OnnxRuntimeBackend().load(DEMO_REPOSITORY / "digits" / "1" / "model.onnx", OPTIONS)
    yield model
    model.close()


def arms(model: LoadedModel) -> list[ProfileArm]:
    return [
        ProfileArm("ort/fp32", model, "onnxruntime", "fp32"),
        ProfileArm("ort/slow", Slow(model), "onnxruntime", "slow", device_kind="cuda"),
    ]


def test_every_arm_batch_and_concurrency_is_measured(digits: LoadedModel) -> None:
    seen: list[float] = []
    report = profile_arms(
        arms(digits), 16, QUICK, model="digits", progress=lambda s, f, m: seen.append(f)
    )
    keys = {(m.arm, m.batch_size, m.concurrency) for m in report.measurements}
    assert keys == {(a, b, c) for a in ("ort/fp32", "ort/slow") for b in (1, 8, 16) for c in (1, 2)}
    for m in report.measurements:
        assert m.calls >= 5 and m.rows == m.calls * m.batch_size
        assert 0 < m.p50_ms <= m.p99_ms and m.throughput_rows_s > 0
        assert m.cpu_ms_per_row is not None and m.cpu_ms_per_row >= 0
        assert m.cost_per_1000_usd is not None and m.cost_per_1000_usd > 0
    slow = [m for m in report.measurements if m.arm == "ort/slow"]
    assert min(m.p50_ms for m in slow) >= 5.0
    assert seen[-1] == 1.0
    assert {a.name: a.price_per_hour for a in report.arms} == {"ort/fp32": 0.10, "ort/slow": 1.20}


def test_the_best_arm_per_objective_is_the_fast_one(digits: LoadedModel) -> None:
    report = profile_arms(arms(digits), 8, QUICK)
    for objective in ("latency", "throughput", "cost"):
        best = report.best_for(objective)
        assert best is not None and best.arm == "ort/fp32", best
    budget = profile_arms(
        [ProfileArm("ort/slow", Slow(digits))],
        8,
        ProfileSettings(
            batch_sizes=(1,), concurrency=(1,), duration_s=0.02, min_calls=3, latency_budget_ms=1.0
        ),
    )
    latency = budget.best_for("latency")
    assert latency is not None and latency.arm is None
    assert "no arm's batch-1 p99 is within the 1.0 ms budget" in latency.note


def measurement(arm: str, batch: int, p99: float, rows_s: float, cost: float) -> Measurement:
    return Measurement(
        arm,
        batch,
        1,
        10,
        10 * batch,
        1.0,
        p99 / 2,
        p99,
        p99,
        p99 / 2,
        rows_s,
        None,
        None,
        None,
        cost,
    )


def test_choosing_decides_on_p99_within_the_budget() -> None:
    ms = [
        measurement("a", 1, p99=9.0, rows_s=100, cost=0.5),  # best p50, worse tail
        measurement("b", 1, p99=4.0, rows_s=90, cost=0.6),
        measurement("a", 32, p99=50.0, rows_s=3000, cost=0.01),  # fast but over budget
        measurement("b", 32, p99=18.0, rows_s=1500, cost=0.02),
    ]
    best = {b.objective: b for b in choose_best(ms, latency_budget_ms=20.0)}
    assert (best["latency"].arm, best["latency"].value) == ("b", 4.0)
    assert (best["throughput"].arm, best["throughput"].batch_size) == ("b", 32)
    assert (best["cost"].arm, best["cost"].value) == ("b", 0.02)
    unbounded = {b.objective: b for b in choose_best(ms)}
    assert unbounded["throughput"].arm == "a" and unbounded["cost"].value == 0.01


def test_summarize_computes_rates_and_cost() -> None:
    m = summarize(
        "x",
        4,
        2,
        [0.001] * 99 + [0.1],
        wall_s=0.5,
        process_cpu_s=0.2,
        caller_cpu_s=0.05,
        rss_delta_bytes=0,
        price_per_hour=3.6,
    )
    assert m.rows == 400 and m.throughput_rows_s == 800
    assert m.p50_ms == pytest.approx(1.0) and m.p99_ms > 1.0
    assert m.cpu_ms_per_row == pytest.approx(0.5) and m.caller_cpu_ms_per_row == pytest.approx(
        0.125
    )
    assert m.cost_per_1000_usd == pytest.approx(3.6 / 3600 / 800 * 1000)
    with pytest.raises(InvalidInput, match="no calls were timed"):
        summarize("x", 1, 1, [], 1.0)


def test_inputs_can_come_from_a_data_set(digits: LoadedModel) -> None:
    data = random_dataset(DIGITS_SPEC, 3, seed=0)
    report = profile_arms([ProfileArm("a", digits)], 8, QUICK, inputs=data)
    assert {m.batch_size for m in report.measurements} == {1, 8}


def test_bad_arms_and_settings_are_invalid_input(digits: LoadedModel) -> None:
    with pytest.raises(InvalidInput, match="no arms"):
        profile_arms([], 8)
    with pytest.raises(InvalidInput, match="unique"):
        profile_arms([ProfileArm("a", digits), ProfileArm("a", digits)], 8)
    with pytest.raises(InvalidInput, match="batch sizes must be at least 1"):
        ProfileSettings(batch_sizes=(0,))
    with pytest.raises(InvalidInput, match="latency budget"):
        ProfileSettings(latency_budget_ms=0)


def test_the_report_is_markdown_json_and_plots(digits: LoadedModel, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    report = profile_arms(arms(digits), 8, QUICK, model="digits")
    files = write_report(report, tmp_path / "out")
    text = files.markdown.read_text()
    assert "# Profile of digits" in text and "indicative" in text
    assert "| throughput | ort/fp32 |" in text
    loaded = json.loads(files.json.read_text())
    assert len(loaded["measurements"]) == len(report.measurements)
    assert [p.name for p in files.plots] == [
        "profile_latency_vs_batch.png",
        "profile_throughput_vs_batch.png",
        "profile_cost_per_1000.png",
    ]
    for plot in files.plots:
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 5000


class Logged(WrappedModel):
    def __init__(self, inner: LoadedModel, name: str, log: list[str]) -> None:
        super().__init__(inner)
        self.name, self.log = name, log

    def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.log.append(self.name)
        return self.inner.infer(inputs)


def test_arms_take_turns_in_rounds(digits: LoadedModel) -> None:
    log: list[str] = []
    settings = ProfileSettings(
        batch_sizes=(1,), concurrency=(1,), duration_s=0.03, min_calls=3, warmup_calls=0, rounds=3
    )
    profile_arms([ProfileArm(n, Logged(digits, n, log)) for n in ("a", "b")], 1, settings)
    turns = [n for i, n in enumerate(log) if i == 0 or log[i - 1] != n]
    assert turns == ["a", "b", "a", "b", "a", "b"]
