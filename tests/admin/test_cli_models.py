"""`infergate models ...` against an in-process gateway (the CLI runs in a thread)."""

from __future__ import annotations

import asyncio
import io
import json
import shutil
from pathlib import Path

import pytest

from infergate import cli
from infergate.cli_models import ProgressBar
from infergate.gateway import tuning
from tests.admin.conftest import TOKEN, Served, start
from tests.admin.payloads import DIGITS_CONFIG, DIGITS_ONNX, sha256


async def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = await asyncio.to_thread(cli.main, list(argv))
    out, err = capsys.readouterr()
    return code, out, err


async def test_register_list_describe_update_unregister(
    served: Served,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("INFERGATE_ADMIN_TOKEN", TOKEN)
    url = ("--url", served.address)
    config = tmp_path / "config.pbtxt"
    config.write_text(DIGITS_CONFIG.replace('name: "digits"', ""))

    code, out, err = await run(
        capsys,
        "models",
        "register",
        "mnist",
        "--onnx",
        str(DIGITS_ONNX),
        "--config",
        str(config),
        *url,
    )
    assert code == 0, err
    assert out.startswith("registered mnist version 1 on onnxruntime (cpu)")
    assert "uploading model.onnx" in err and "100%" in err and "MB/s" in err

    code, out, _ = await run(capsys, "models", "list", *url)
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split()[:3] == ["NAME", "STATE", "VERSION"]
    assert [r.split()[:3] for r in rows] == [["digits", "READY", "1"], ["mnist", "READY", "1"]]

    code, out, _ = await run(capsys, "models", "describe", "mnist", *url)
    assert code == 0
    assert "mnist: READY" in out and "version 1: READY" in out
    assert sha256(DIGITS_ONNX) in out and "max_batch_size 64" in out

    code, out, _ = await run(
        capsys,
        "models",
        "update",
        "mnist",
        "--max-queue-delay-us",
        "2000",
        "--preferred-batch-size",
        "8",
        "16",
        "--cache",
        *url,
    )
    assert code == 0
    assert "batching on (delay 2000 us, preferred [8, 16])" in out and "cache on" in out
    live = served.server.core.model("mnist").config
    assert live.dynamic_batching.max_queue_delay_microseconds == 2000
    assert live.response_cache.enable

    code, out, _ = await run(capsys, "models", "describe", "mnist", "--json", *url)
    described = json.loads(out)
    assert described["config"]["dynamic_batching"]["preferred_batch_size"] == [8, 16]

    code, out, _ = await run(capsys, "models", "unregister", "mnist", "--keep-files", *url)
    assert code == 0 and "files kept" in out
    code, out, _ = await run(capsys, "models", "unregister", "mnist", *url)
    assert code == 0 and "files removed" in out
    assert not (served.repo / "mnist").exists()


async def test_errors_are_clear_and_set_the_exit_status(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = ("--url", served.address)
    code, _, err = await run(capsys, "models", "list", "--token", "wrong-token-0123456789", *url)
    assert code == 1
    assert "UNAUTHENTICATED" in err and "INFERGATE_ADMIN_TOKEN" in err

    token = ("--token", TOKEN)
    code, _, err = await run(capsys, "models", "describe", "nope", *token, *url)
    assert code == 1 and "NOT_FOUND" in err and "'nope'" in err

    code, _, err = await run(
        capsys, "models", "register", "m", "--onnx", str(tmp_path / "missing.onnx"), *token, *url
    )
    assert code == 2 and "missing.onnx" in err
    code, _, err = await run(capsys, "models", "register", "m", *token, *url)
    assert code == 2 and "nothing to upload" in err
    code, _, err = await run(capsys, "models", "update", "digits", *token, *url)
    assert code == 2 and "nothing to update" in err

    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"garbage")
    code, _, err = await run(
        capsys, "models", "register", "m", "--onnx", str(corrupt), "--no-progress", *token, *url
    )
    assert code == 1 and "INVALID_ARGUMENT" in err and err.count("\n") == 1

    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    code, out, _ = await run(capsys, "models", "list", "--token-file", str(token_file), *url)
    assert code == 0 and "digits" in out


def test_progress_on_a_terminal_redraws_one_line() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    bar = ProgressBar(stream)
    total = 32 * 1024 * 1024
    for sent in range(0, total + 1, 1024 * 1024):
        bar("model.onnx", sent, total)
    text = stream.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")
    assert "\r" in text and "100%" in text.splitlines()[-1].split("\r")[-1]


def test_progress_in_a_log_prints_a_line_per_quarter() -> None:
    stream = io.StringIO()
    bar = ProgressBar(stream)
    total = 32 * 1024 * 1024
    for sent in range(0, total + 1, 1024 * 1024):
        bar("model.onnx", sent, total)
    lines = stream.getvalue().splitlines()
    assert [line.split()[3] for line in lines] == ["0%", "25%", "50%", "75%", "100%"]


async def test_describe_says_how_batches_run_and_why(
    repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INFERGATE_ADMIN_TOKEN", TOKEN)
    # A model whose config sets its own batches in flight (Triton's instance_group).
    shutil.copytree(repo / "digits", repo / "grouped")
    config = repo / "grouped" / "config.pbtxt"
    text = config.read_text().replace('name: "digits"', 'name: "grouped"')
    config.write_text(text + "\ninstance_group { count: 3 kind: KIND_CPU }\n")
    server = await start(repo, intra_op_threads=0)  # automatic, as by default
    try:
        cores = tuning.usable_cores()
        code, out, err = await run(capsys, "models", "describe", "digits", "--url", server.address)
        assert code == 0, err
        # digits has an onnxruntime arm, whose calls may use every core.
        spinning = max(1, cores - tuning.FRONT_END_CORES)
        assert (
            f"runtime calls: {cores} intra-op thread{'s' if cores != 1 else ''} "
            f"(automatic: {cores} usable core(s); onnxruntime, whose idle threads sleep, uses "
            f"them all; runtimes whose threads spin use {spinning}, keeping 1 for the gRPC "
            "front end)"
        ) in out, out
        assert (
            "execution: 1 batch(es) in flight per device (--max-inflight-batches 1, the default"
            in out
        )
        assert "on the event loop when a recent call took <= 200 us" in out

        code, out, err = await run(capsys, "models", "describe", "grouped", "--url", server.address)
        assert code == 0, err
        assert "3 batch(es) in flight per device (the config's instance_group count)" in out, out
    finally:
        await server.stop()

    server = await start(repo, intra_op_threads=3, max_inflight_batches=2, inline_below_us=0)
    try:
        code, out, err = await run(
            capsys, "models", "describe", "digits", "--json", "--url", server.address
        )
        assert code == 0, err
        execution = json.loads(out)["versions"][0]["execution"]
        assert execution == {
            "intra_op_threads": 3,
            "intra_op_threads_reason": "--intra-op-threads",
            "max_inflight_batches": 2,
            "max_inflight_batches_reason": "--max-inflight-batches 2",
        }
    finally:
        await server.stop()
