"""Triton's example repository (rebuilt by tests/triton_models.py) served by a CLI
gateway and driven by tritonclient the way Triton's example programs drive Triton:
plain, async and asyncio inference, strings, typed INT8 contents, classification,
sequences (sync, streamed and asyncio; interleaved; idle ones dropped), system
shared memory, CUDA shared memory without a GPU, and the errors each can meet.

tritonclient runs in a process of its own (tests/triton/tritonclient_drive.py): it
cannot share an interpreter with infergate's generated protocol.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests import triton_models
from tests.cli_gateway import CliGateway, cli_gateway

DRIVER = Path(__file__).with_name("tritonclient_drive.py")
VALUES = [11, 7, 5, 3, 2, 0, 1]  # tritonclient_drive.SEQUENCE_VALUES


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CliGateway]:
    workdir = tmp_path_factory.mktemp("triton")
    repository = triton_models.build(workdir / "repository")
    with cli_gateway(workdir, repository) as gw:
        yield gw


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, Path]:
    x = np.random.default_rng(11).random(triton_models.IMAGE, dtype=np.float32)
    path = tmp_path_factory.mktemp("image") / "image.npy"
    np.save(path, x)
    return x, path


@pytest.fixture(scope="module")
def results(gateway: CliGateway, image: tuple[np.ndarray, Path]) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, str(DRIVER), "--url", gateway.url, "--image", str(image[1])],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, (
        f"driver exited with {proc.returncode}:\n{proc.stderr}\ngateway log:\n{gateway.log_text()}"
    )
    found: dict[str, Any] = json.loads(proc.stdout)
    return found


def ok(results: dict[str, Any], scenario: str) -> Any:
    entry = results[scenario]
    assert "error" not in entry, f"{scenario} failed: {entry['error']}"
    return entry["ok"]


def status(error: dict[str, Any]) -> str:
    return str(error["status"]).removeprefix("StatusCode.")


# ---- plain inference -------------------------------------------------------------


def test_simple_sync_async_and_asyncio(results: dict[str, Any]) -> None:
    a = np.tile(np.arange(16), (2, 1))
    for kind, answer in ok(results, "simple").items():
        assert answer["sum"] == (a + 1).tolist(), kind
        assert answer["diff"] == (a - 1).tolist(), kind


def test_int8_typed_contents(results: dict[str, Any]) -> None:
    answer = ok(results, "int8_explicit")
    assert answer["OUTPUT0"] == [i - 1 for i in range(16)]
    assert answer["OUTPUT1"] == [i + 1 for i in range(16)]


def test_strings_cast_to_numbers_and_identity(results: dict[str, Any]) -> None:
    answer = ok(results, "strings")
    assert answer["sum"] == [str(i + 1) for i in range(16)]
    assert answer["diff"] == [str(i - 1) for i in range(16)]
    assert answer["identity"] == ["", "infergate", "ünïcødé ✓", "x" * 1000]
    assert answer["identity_shape"] == [1, 4]


# ---- classification ----------------------------------------------------------------


def test_classification_top_k_with_labels(
    results: dict[str, Any], image: tuple[np.ndarray, Path]
) -> None:
    answer = ok(results, "classification")
    scores = triton_models.classifier_scores(image[0])
    expected = np.argsort(-scores, kind="stable")[:3]
    assert answer["top3_shape"] == [3]  # max_batch_size 0: [k]
    got = [entry.split(":") for entry in answer["top3"]]
    assert [int(index) for _, index, _ in got] == expected.tolist()
    assert [name for _, _, name in got] == [triton_models.label(i) for i in expected]
    for (value, _, _), index in zip(got, expected, strict=True):
        assert len(value.split(".")[1]) == 6  # std::to_string's six decimals
        assert float(value) == pytest.approx(scores[index], abs=1e-4)
    # The output as values again, reshaped back to its dims.
    np.testing.assert_allclose(answer["scores_after"], scores, atol=1e-4)


def test_classification_per_batch_row_of_integers(results: dict[str, Any]) -> None:
    answer = ok(results, "classification")
    # Row 0: 0..15 + 1; row 1: 0..15 + 5. Integers print as integers, no label file.
    assert answer["batched"] == [["16:15", "15:14"], ["20:15", "19:14"]]
    assert answer["batched_other"][1][:2] == [-5, -4]  # the other output untouched


def test_class_count_above_the_output_size_is_invalid(results: dict[str, Any]) -> None:
    error = ok(results, "classification")["too_many"]
    assert status(error) == "INVALID_ARGUMENT"
    assert "1001 classes" in error["message"] and "1000" in error["message"]


# ---- sequences -----------------------------------------------------------------------


def test_sequence_examples_sync(results: dict[str, Any]) -> None:
    """The values Triton's own sequence examples expect from its example models."""
    answer = ok(results, "sequence_sync")
    simple = answer["simple"]
    assert simple[0] == [1, *VALUES]  # START adds 1 to the first request
    assert simple[1] == [101, *(-v for v in VALUES)]
    assert simple[2] == [21, *(-v for v in VALUES)]  # a UUID string ID
    dyna = answer["dyna"]
    assert dyna[0] == [1, *VALUES[:-1], VALUES[-1] + 1000]  # END adds the correlation ID
    assert dyna[1] == [101, *(-v for v in VALUES[:-1]), -VALUES[-1] + 1001]
    running = np.cumsum([20, *(-v for v in VALUES)]).tolist()
    assert dyna[2] == [*running[:-1], running[-1] + 1002]  # a string CORRID, kept state


def test_sequences_interleaved_on_one_stream(results: dict[str, Any]) -> None:
    answer = ok(results, "sequence_stream")
    assert answer["errors"] == []
    got = answer["results"]
    int0, int1, named = answer["ids"]
    assert [got[f"{int0}_{i}"] for i in range(8)] == [1, *VALUES[:-1], 1 + 2000]
    assert [got[f"{int1}_{i}"] for i in range(8)] == [101, *(-v for v in VALUES[:-1]), -1 + 2001]
    assert [got[f"{named}_{i}"] for i in range(8)] == [21, *VALUES]


def test_sequences_on_the_asyncio_stream(results: dict[str, Any]) -> None:
    answer = ok(results, "sequence_aio")
    assert answer["errors"] == []
    got = answer["results"]
    assert [got[f"3000_{i}"] for i in range(4)] == [5, 16, 23, 25]
    assert [got[f"3001_{i}"] for i in range(4)] == [1, 3, 6, 10]


def test_implicit_state_accumulates_and_resets(results: dict[str, Any]) -> None:
    answer = ok(results, "accumulator")
    assert answer["first"] == [5, 16, 23, 25]
    assert answer["again"] == [1, 2]  # the same ID, started again: from zero
    assert answer["named"] == [3, 7]


def test_bad_sequence_requests_get_their_own_status(results: dict[str, Any]) -> None:
    answer = ok(results, "sequence_errors")
    errors = answer["errors"]
    assert status(errors["reused_id"]) == "ALREADY_EXISTS"
    assert "still open" in errors["reused_id"]["message"]
    assert status(errors["no_start"]) == "INVALID_ARGUMENT"
    assert "must specify the START flag" in errors["no_start"]["message"]
    assert status(errors["no_sequence_id"]) == "INVALID_ARGUMENT"
    assert "non-zero or non-empty correlation ID" in errors["no_sequence_id"]["message"]
    assert status(errors["two_rows"]) == "INVALID_ARGUMENT"
    assert "batch-size 1" in errors["two_rows"]["message"]
    assert status(errors["control_sent"]) == "INVALID_ARGUMENT"
    assert status(errors["string_id_for_uint64_corrid"]) == "INVALID_ARGUMENT"
    assert status(errors["after_end"]) == "INVALID_ARGUMENT"
    # The sequence open beside all of that: undisturbed.
    assert answer["sums"] == [10, 15, 16]


def test_an_idle_sequence_is_dropped(results: dict[str, Any]) -> None:
    answer = ok(results, "sequence_idle")
    assert answer["before"] == [4]
    assert status(answer["dropped"]) == "FAILED_PRECONDITION"
    assert "idle" in answer["dropped"]["message"]
    assert answer["restarted"] == [2, 5]


# ---- shared memory ----------------------------------------------------------------


def test_system_shared_memory_round_trip(results: dict[str, Any]) -> None:
    answer = ok(results, "shared_memory")
    assert answer["sum"] == [list(range(1, 17))]
    assert answer["diff"] == [list(range(-1, 15))]
    assert answer["raw_entries"] == [0, 0]  # written to the region, not the response
    assert answer["mixed_raw_entries"] == [0, 64]
    assert answer["mixed_diff"] == [list(range(-1, 15))]
    regions = answer["status"]["regions"]
    assert set(regions) == {"input_data", "output_data"}
    assert regions["input_data"]["key"].startswith("/input_simple_")
    assert int(regions["input_data"]["byte_size"]) == 128
    assert set(answer["one"]["regions"]) == {"input_data"}
    assert set(answer["after_one"]["regions"]) == {"output_data"}
    assert answer["after_all"] == {}
    assert status(answer["gone"]) == "NOT_FOUND"


def test_strings_in_shared_memory(results: dict[str, Any]) -> None:
    answer = ok(results, "shared_memory_strings")
    assert answer["sum"] == [str(i + 1) for i in range(16)]
    assert answer["diff"] == [str(i - 1) for i in range(16)]


def test_bad_regions_offsets_and_sizes_are_refused(results: dict[str, Any]) -> None:
    answer = ok(results, "shared_memory_errors")
    errors = answer["errors"]
    expected = {
        "register_unknown_key": "NOT_FOUND",
        "register_past_end": "INVALID_ARGUMENT",
        "register_offset_past_end": "INVALID_ARGUMENT",
        "register_twice": "ALREADY_EXISTS",
        "register_path_key": "INVALID_ARGUMENT",
        "unknown_region": "NOT_FOUND",
        "offset_past_end": "INVALID_ARGUMENT",
        "window_past_end": "INVALID_ARGUMENT",
        "size_too_small": "INVALID_ARGUMENT",
        "output_region_too_small": "INVALID_ARGUMENT",
        "status_unknown": "NOT_FOUND",
    }
    assert {name: status(e) for name, e in errors.items()} == expected
    assert "Unable to find shared memory region" in errors["unknown_region"]["message"]
    assert "Invalid offset" in errors["offset_past_end"]["message"]
    # Nothing else disturbed: the region still serves, only it is registered.
    assert answer["good_sum"] == [list(range(1, 17))]
    assert "bad_in" in answer["status"]["regions"]
    assert not {"nokey", "big", "far", "path"} & set(answer["status"]["regions"])


def test_cuda_shared_memory_without_a_gpu(results: dict[str, Any]) -> None:
    answer = ok(results, "cuda_shared_memory")
    assert status(answer["register"]) == "FAILED_PRECONDITION"
    assert "no GPU" in answer["register"]["message"]
    assert answer["status"] == {}
    assert status(answer["status_named"]) == "NOT_FOUND"
    assert answer["unregister"] is True


# ---- metadata and wording ---------------------------------------------------------------


def test_metadata_and_triton_wording(results: dict[str, Any]) -> None:
    answer = ok(results, "metadata")
    server = answer["server"]
    assert server["name"] == "infergate"
    assert {"classification", "sequence", "system_shared_memory"} <= set(server["extensions"])
    assert "cuda_shared_memory" not in server["extensions"]
    # Control inputs are the gateway's: not in the metadata, as in Triton.
    assert [t["name"] for t in answer["sequence_model"]["inputs"]] == ["INPUT"]
    assert "oldest" in answer["sequence_config"]["config"]["sequence_batching"]
    # A reshaped tensor shows its declared dims.
    assert answer["classifier"]["inputs"][0]["shape"] == ["3", "224", "224"]
    assert answer["classifier"]["outputs"][0]["shape"] == ["1000"]
    for key in ("unknown_model", "unknown_infer", "missing_version"):
        assert status(answer[key]) == "NOT_FOUND", key
        assert "Request for unknown model" in answer[key]["message"], key
    assert status(answer["bad_version"]) == "INVALID_ARGUMENT"
    assert (
        "failed to get model version from specified version string"
        in answer["bad_version"]["message"]
    )
