"""OptimizeModel and ProfileModel over the admin RPC (issue 17): variants built, gated
against fp32 on real data, served as arms, kept across a restart; every bad request a
clear status while the model keeps serving its arms."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from infergate.clients import AsyncClient
from infergate.clients.admin_client import AdminError, AsyncAdminClient
from tests.admin.conftest import TOKEN, Served, start

INT8 = "onnxruntime/cpu/int8-dynamic"


def digits_data() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Calibration rows (training part) and held-out rows with labels, as the model
    was trained (models/make_demo_models.py: pixels / 16, the last 297 held out)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    labels = digits.target.astype(np.int64)
    return {"x": x[:300]}, {"x": x[1500:], "labels": labels[1500:]}


async def optimize(admin: AsyncAdminClient, **kwargs: object) -> object:
    calibration, validation = digits_data()
    arguments: dict[str, object] = {
        "variants": ["int8-dynamic"],
        "backends": ["onnxruntime"],
        **kwargs,
    }
    return await admin.optimize("digits", calibration, validation, **arguments)  # type: ignore[arg-type]


async def refused(admin: AsyncAdminClient, **kwargs: object) -> AdminError:
    with pytest.raises(AdminError) as caught:
        await optimize(admin, **kwargs)
    return caught.value


async def assert_serves(client: AsyncClient) -> None:
    y = (await client.infer("digits", {"x": np.zeros((1, 64), np.float32)}))["y"]
    assert y.shape == (1, 10)


async def test_an_admitted_variant_serves_as_an_arm_and_survives_a_restart(
    served: Served, admin: AsyncAdminClient, client: AsyncClient
) -> None:
    stages: list[str] = []
    result = await optimize(admin, progress=lambda stage, fraction, message: stages.append(stage))
    (verdict,) = result.results  # type: ignore[attr-defined]
    assert verdict.status == "admitted", verdict.reason
    assert verdict.figures["top1_agreement"] >= 0.99
    assert verdict.figures["accuracy_drop"] <= 0.01
    assert INT8 in result.arms  # type: ignore[attr-defined]
    assert {"prepare", "gate", "load"} <= set(stages)
    model = served.server.core.model("digits")
    assert INT8 in [arm.name for arm in model.router.arms]
    await assert_serves(client)

    described = await admin.describe("digits")
    (variant,) = described.versions[0].variants
    assert (variant.backend, variant.variant, variant.status) == (
        "onnxruntime",
        "int8-dynamic",
        "admitted",
    )
    assert INT8 in [arm.name for arm in described.versions[0].arms]

    # A restart serves it again from what was stored, without building anything.
    gate = served.repo / "digits" / "1" / "variants" / "onnxruntime.int8-dynamic" / "gate.json"
    built_at = gate.stat().st_mtime_ns
    await served.server.stop()
    started = time.monotonic()
    server = await start(served.repo, max_inflight_batches=1)
    try:
        reload_s = time.monotonic() - started
        assert INT8 in [a.name for a in server.core.model("digits").router.arms]
        assert gate.stat().st_mtime_ns == built_at
        assert reload_s < 30
    finally:
        await server.stop()


async def test_an_impossible_threshold_rejects_and_keeps_the_figures(
    served: Served, admin: AsyncAdminClient, client: AsyncClient
) -> None:
    result = await optimize(admin, thresholds={"max_abs_error": 0.0})
    (verdict,) = result.results  # type: ignore[attr-defined]
    assert verdict.status == "rejected"
    assert verdict.figures["max_abs_error"] > 0
    assert INT8 not in result.arms  # type: ignore[attr-defined]
    described = await admin.describe("digits")
    (stored,) = described.versions[0].variants
    assert stored.status == "rejected" and "max_abs_error" in stored.figures
    await assert_serves(client)


@pytest.mark.parametrize(
    ("change", "code", "fragment"),
    [
        ({"variants": ["int9-magic"]}, grpc.StatusCode.INVALID_ARGUMENT, "int8-dynamic"),
        ({"variants": ["fp16"]}, grpc.StatusCode.FAILED_PRECONDITION, "fp16"),
        ({"thresholds": {"min_top1_agreement": 1.5}}, grpc.StatusCode.INVALID_ARGUMENT, "top1"),
        ({"thresholds": {"speed": 1.0}}, grpc.StatusCode.INVALID_ARGUMENT, "speed"),
        ({"backends": ["nope"]}, grpc.StatusCode.INVALID_ARGUMENT, "nope"),
        ({"version": "7"}, grpc.StatusCode.NOT_FOUND, "7"),
    ],
)
async def test_bad_requests_are_refused_clearly(
    served: Served,
    admin: AsyncAdminClient,
    client: AsyncClient,
    change: dict[str, object],
    code: grpc.StatusCode,
    fragment: str,
) -> None:
    error = await refused(admin, **change)
    assert error.code == code, error.message
    assert fragment in error.message
    await assert_serves(client)
    assert [a.name for a in served.server.core.model("digits").router.arms] == [
        "onnxruntime/cpu/fp32"
    ]


@pytest.mark.parametrize(
    ("calibration", "fragment"),
    [
        ({"x": np.zeros((10, 63), np.float32)}, "x"),
        ({"x": np.zeros((10, 64), np.float64)}, "FP32"),
        ({"z": np.zeros((10, 64), np.float32)}, "x"),
        ({"x": np.zeros((0, 64), np.float32)}, "empty"),
        ({"x": np.full((10, 64), np.nan, np.float32)}, "NaN"),
    ],
)
async def test_calibration_data_that_does_not_fit_is_invalid(
    served: Served, admin: AsyncAdminClient, calibration: dict[str, np.ndarray], fragment: str
) -> None:
    with pytest.raises(AdminError) as caught:
        await admin.optimize("digits", calibration, variants=["int8-dynamic"])
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert fragment in caught.value.message


async def test_a_second_optimization_of_the_model_waits_its_turn(
    served: Served, admin: AsyncAdminClient
) -> None:
    working = asyncio.Event()
    first = asyncio.create_task(
        optimize(
            admin,
            variants=["int8-static", "int8-dynamic", "optimized"],
            progress=lambda stage, fraction, message: working.set(),
        )
    )
    await asyncio.wait_for(working.wait(), 30)  # it has begun: the second must wait
    error = await refused(admin)
    assert error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "being optimized" in error.message
    await first


async def test_optimizing_an_unknown_model_is_not_found(admin: AsyncAdminClient) -> None:
    calibration, _ = digits_data()
    with pytest.raises(AdminError) as caught:
        await admin.optimize("nope", calibration)
    assert caught.value.code == grpc.StatusCode.NOT_FOUND


async def test_a_profile_reports_every_arm_with_plots(
    served: Served, admin: AsyncAdminClient, tmp_path: Path
) -> None:
    report = await admin.profile(
        "digits", batch_sizes=[1, 4], concurrency=[1], seconds_per_case=0.05
    )
    assert "onnxruntime/cpu/fp32" in report.report_markdown
    figures = json.loads(report.report_json)
    assert figures and report.plots
    assert all(data.startswith(b"\x89PNG") for data in report.plots.values())


async def test_optimize_needs_the_admin_token(served: Served) -> None:
    async with AsyncAdminClient(served.address, "wrong-token-" + TOKEN) as intruder:
        with pytest.raises(AdminError) as caught:
            await optimize(intruder)
    assert caught.value.code == grpc.StatusCode.UNAUTHENTICATED


async def test_the_cache_shares_answers_between_a_versions_admitted_arms(
    served: Served, admin: AsyncAdminClient, client: AsyncClient
) -> None:
    """docs/variants.md, "The response cache and lossy arms": an answer an int8 arm
    computed is cached for the version, and served to a request the fp32 arm would
    otherwise have run, since any admitted arm could have answered it live."""
    from infergate.clients.admin_client import batching

    await optimize(admin)
    await admin.update("digits", batching(routing_policy="fixed", fixed_arm=INT8))
    x = {"x": np.random.default_rng(7).random((1, 64), dtype=np.float32)}
    from_int8 = (await client.infer("digits", x))["y"]
    await admin.update("digits", batching(routing_policy="fixed", fixed_arm="onnxruntime/cpu/fp32"))
    stats = served.server.core.model("digits").stats
    hits = stats.cache_hit.count
    again = (await client.infer("digits", x))["y"]
    assert stats.cache_hit.count == hits + 1
    np.testing.assert_array_equal(again, from_int8)  # the int8 arm's bytes, from the cache
    # What fp32 computes for it differs a little: it was not asked.
    fp32 = served.server.core.model("digits").arms[0].runtime.infer(x)["y"]
    assert not np.array_equal(fp32, from_int8)


async def test_live_traffic_calibrates_when_captured(
    served: Served, admin: AsyncAdminClient, client: AsyncClient
) -> None:
    """capture_rows keeps a uniform sample of live request rows in memory; OptimizeModel
    with use_captured calibrates (and gates) on it. Nothing is written to disk."""
    from infergate.gateway.core.repository import parse_config

    with pytest.raises(AdminError) as caught:
        await admin.optimize("digits", None, variants=["int8-dynamic"])
    assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "capture_rows" in caught.value.message

    config_path = served.repo / "digits" / "config.pbtxt"
    config = parse_config(config_path.read_text(), "digits")
    config.capture_rows = 64
    config.ClearField("response_cache")  # every request reaches the pipeline
    await admin.register(
        "digits", {"model.onnx": served.repo / "digits" / "1" / "model.onnx"}, config
    )
    calibration, _ = digits_data()
    for first in range(0, 200, 4):
        await client.infer("digits", {"x": calibration["x"][first : first + 4]})
    capture = served.server.core.model("digits").capture
    assert capture is not None and len(capture) == 64
    result = await admin.optimize(
        "digits", None, variants=["int8-dynamic"], backends=["onnxruntime"]
    )
    (verdict,) = result.results
    assert verdict.status == "admitted", verdict.reason
    assert not list(served.repo.rglob("*.npz"))
