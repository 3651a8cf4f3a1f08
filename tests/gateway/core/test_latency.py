from __future__ import annotations

import pytest

from infergate.gateway.core.latency import LatencyModel


def test_fixed_and_per_row_costs_are_recovered_from_varied_batch_sizes() -> None:
    model = LatencyModel()
    for rows in (1, 8, 32, 4, 16, 2, 32, 1) * 3:
        model.observe(rows, 0.002 + 0.0005 * rows)
    fit = model.fit
    assert fit.fixed_s == pytest.approx(0.002, rel=1e-6)
    assert fit.per_row_s == pytest.approx(0.0005, rel=1e-6)
    assert model.predict_s(64) == pytest.approx(0.034, rel=1e-6)


def test_one_size_only_keeps_the_slope_learned_earlier() -> None:
    model = LatencyModel()
    for rows in (1, 32, 1, 32):
        model.observe(rows, 0.001 + 0.001 * rows)
    for _ in range(50):
        model.observe(8, 0.009 * 1.2)  # the same size, 20% slower now
    assert model.fit.per_row_s == pytest.approx(0.001, rel=0.1)
    assert model.predict_s(8) == pytest.approx(0.0108, rel=0.02)


def test_a_change_of_regime_shows_in_two_samples_and_one_outlier_is_noise() -> None:
    model = LatencyModel()
    for _ in range(20):
        model.observe(8, 0.010)
    model.observe(8, 0.100)  # one stall
    assert model.predict_s(8) < 0.040
    model.observe(8, 0.010)
    model.observe(8, 0.001)
    model.observe(8, 0.001)  # faster now, twice in a row
    assert model.predict_s(8) < 0.004
    model.observe(8, 0.030)
    model.observe(8, 0.030)
    assert model.predict_s(8) > 0.015


def test_ordinary_noise_moves_the_estimate_gently() -> None:
    model = LatencyModel()
    for _ in range(20):
        model.observe(8, 0.010)
    model.observe(8, 0.015)
    assert 0.010 < model.predict_s(8) < 0.012


def test_percentiles_of_recent_batches() -> None:
    model = LatencyModel()
    for ms in range(1, 101):
        model.observe(1, ms / 1000)
    assert model.percentile_ms(50) == pytest.approx(50.5)
    assert model.percentile_ms(95) == pytest.approx(95.05)
