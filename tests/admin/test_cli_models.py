"""`infergate models ...` against an in-process gateway (the CLI runs in a thread)."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import pytest

from infergate import cli
from infergate.cli_models import ProgressBar
from tests.admin.conftest import TOKEN, Served
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
