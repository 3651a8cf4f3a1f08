"""docs/clients.md's examples run as written against a live gateway.

Every fenced block marked `test` (```python test, ```bash test, ```js test) runs in a
process of its own (tritonclient's block cannot share one with infergate's protocol
code), from the repository's root (the Node.js ones from clients/node, as the page
says), with INFERGATE_URL and INFERGATE_ADMIN_TOKEN set and this environment's bin
folder first on PATH. Blocks without the mark are not run (TLS to a host that is not
there, grpcurl, which no package registry here carries).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.clients.conftest import LiveGateway
from tests.clients.test_node_client import NODE_CLIENT, node

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "clients.md"
FENCE = re.compile(r"^```(\w+)( test)?\n(.*?)^```$", re.MULTILINE | re.DOTALL)
BLOCK_TIMEOUT_S = 120


@dataclass(frozen=True)
class Example:
    language: str
    code: str
    line: int

    @property
    def name(self) -> str:
        return f"{self.language}-line-{self.line}"


def examples(text: str) -> tuple[list[Example], list[Example]]:
    """The blocks marked `test`, and the others."""
    tested: list[Example] = []
    shown: list[Example] = []
    for match in FENCE.finditer(text):
        example = Example(match[1], match[3], text.count("\n", 0, match.start()) + 1)
        (tested if match[2] else shown).append(example)
    return tested, shown


TESTED, SHOWN = examples(PAGE.read_text())


def test_the_page_shows_every_kind_of_client() -> None:
    assert len(TESTED) >= 10
    assert {e.language for e in TESTED} == {"python", "bash", "js"}
    # Only what cannot run here is left untested.
    assert {e.language for e in SHOWN} == {"bash", "python"}
    assert all("grpcurl" in e.code or "pip install" in e.code or "Tls" in e.code for e in SHOWN)


@pytest.mark.parametrize("example", TESTED, ids=[e.name for e in TESTED])
def test_example_runs(example: Example, live_gateway: LiveGateway) -> None:
    environment = {
        **os.environ,
        "INFERGATE_URL": live_gateway.url,
        "INFERGATE_ADMIN_TOKEN": live_gateway.token,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    if example.language == "python":
        command, cwd = [sys.executable, "-c", example.code], ROOT
    elif example.language == "bash":
        command, cwd = ["bash", "-euo", "pipefail", "-c", example.code], ROOT
    else:
        command, cwd = [node(), "--input-type=module", "-e", example.code], NODE_CLIENT
    done = subprocess.run(
        command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S
    )
    assert done.returncode == 0, (
        f"docs/clients.md line {example.line} failed:\n{done.stdout}\n{done.stderr}"
    )
