"""The checked-in generated code matches proto/*.proto (run `make proto` if this fails)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_generated_code_is_current(tmp_path: Path) -> None:
    # protoc runs in a process of its own: in this one, tensorflow (imported by the
    # variant tests) brings protobuf's C++ runtime too, and protoc's copy crashed on it.
    done = subprocess.run(
        [sys.executable, str(ROOT / "proto" / "generate.py"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    written = sorted(p for p in tmp_path.iterdir() if "_pb2" in p.name)
    assert written, "nothing was generated"
    checked_in = ROOT / "infergate" / "protocol"
    stale = [p.name for p in written if (checked_in / p.name).read_text() != p.read_text()]
    assert not stale, f"stale generated files {stale}: run `make proto`"
    extra = {p.name for p in checked_in.glob("*_pb2*")} - {p.name for p in written}
    assert not extra, f"generated files without a .proto: {sorted(extra)}"


def test_wire_names_match_the_protocol() -> None:
    from infergate.protocol import inference_pb2 as pb

    service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert service.full_name == "inference.GRPCInferenceService"
    assert pb.ModelInferRequest.DESCRIPTOR.fields_by_name["raw_input_contents"].number == 7
    assert pb.ModelInferResponse.DESCRIPTOR.fields_by_name["raw_output_contents"].number == 6
    config = pb.ModelConfigResponse.DESCRIPTOR.fields_by_name["config"].message_type
    assert config.fields_by_name["response_cache"].number == 24
    assert config.fields_by_name["backend"].number == 17
