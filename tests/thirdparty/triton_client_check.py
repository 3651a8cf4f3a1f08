"""Drive a gateway with Triton's own Python gRPC client and print what it saw as JSON.

Run in a process of its own (tritonclient's generated protobuf code and infergate's
register the same `inference.*` symbols, so one process cannot import both):

    python tests/thirdparty/triton_client_check.py --url 127.0.0.1:8001 --input x.npy

The input (FP32 [N, 64], N >= 3) is read from a .npy file so the caller can compute
the expected outputs itself. Every step is recorded as {"ok": value} or
{"error": {"type", "status", "message"}}, so that one failing call does not hide
the others; the JSON object goes to stdout, nothing else does.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient  # type: ignore[import-untyped]
from tritonclient.utils import InferenceServerException  # type: ignore[import-untyped]

MODEL = "digits"
STREAM_REQUESTS = 3


def _error(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, InferenceServerException):
        return {"type": type(exc).__name__, "status": exc.status(), "message": exc.message()}
    return {"type": type(exc).__name__, "status": None, "message": str(exc)}


def _step(fn: Callable[[], Any]) -> dict[str, Any]:
    try:
        return {"ok": fn()}
    except Exception as exc:
        return {"error": _error(exc)}


def _inference_count(client: grpcclient.InferenceServerClient) -> int:
    stats = client.get_inference_statistics(model_name=MODEL, as_json=True)
    # uint64 fields come back from MessageToJson as strings.
    return sum(int(m.get("inference_count", 0)) for m in stats.get("model_stats", []))


def _infer(client: grpcclient.InferenceServerClient, x: np.ndarray) -> dict[str, Any]:
    inp = grpcclient.InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    result = client.infer(
        MODEL, [inp], outputs=[grpcclient.InferRequestedOutput("y")], request_id="infer-1"
    )
    response = result.get_response()
    y = result.as_numpy("y")
    return {
        "id": response.id,
        "model_name": response.model_name,
        "y": None if y is None else y.tolist(),
        "y_dtype": None if y is None else str(y.dtype),
        "y_shape": None if y is None else list(y.shape),
    }


def _stream(client: grpcclient.InferenceServerClient, x: np.ndarray) -> dict[str, Any]:
    """Send row i of x as request id "stream-i" on one stream; collect answers by id."""
    answers: dict[str, Any] = {}
    errors: list[dict[str, Any]] = []
    done = threading.Event()
    lock = threading.Lock()

    def callback(result: Any, error: InferenceServerException | None) -> None:
        with lock:
            if error is not None:
                errors.append(_error(error))
            else:
                response = result.get_response()
                y = result.as_numpy("y")
                answers[response.id] = None if y is None else y.tolist()
            if len(answers) + len(errors) >= STREAM_REQUESTS:
                done.set()

    client.start_stream(callback=callback)
    try:
        for i in range(STREAM_REQUESTS):
            row = np.ascontiguousarray(x[i : i + 1])
            inp = grpcclient.InferInput("x", list(row.shape), "FP32")
            inp.set_data_from_numpy(row)
            client.async_stream_infer(
                MODEL,
                [inp],
                outputs=[grpcclient.InferRequestedOutput("y")],
                request_id=f"stream-{i}",
            )
        completed = done.wait(timeout=30)
    finally:
        client.stop_stream()
    with lock:
        return {"completed": completed, "answers": dict(answers), "errors": list(errors)}


def _bad_shape(client: grpcclient.InferenceServerClient) -> dict[str, Any]:
    """An input of the wrong shape ([2, 63] where the model wants [-1, 64]) must fail."""
    bad = np.zeros((2, 63), dtype=np.float32)
    inp = grpcclient.InferInput("x", list(bad.shape), "FP32")
    inp.set_data_from_numpy(bad)
    try:
        client.infer(MODEL, [inp], outputs=[grpcclient.InferRequestedOutput("y")])
    except InferenceServerException as exc:
        return {"raised": True, **_error(exc)}
    return {"raised": False}


def run(url: str, x: np.ndarray) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with grpcclient.InferenceServerClient(url=url) as client:
        results["is_server_live"] = _step(client.is_server_live)
        results["is_server_ready"] = _step(client.is_server_ready)
        results["server_metadata"] = _step(lambda: client.get_server_metadata(as_json=True))
        results["is_model_ready"] = _step(lambda: client.is_model_ready(MODEL))
        results["model_metadata"] = _step(lambda: client.get_model_metadata(MODEL, as_json=True))
        results["model_config"] = _step(lambda: client.get_model_config(MODEL, as_json=True))
        results["repository_index"] = _step(lambda: client.get_model_repository_index(as_json=True))
        results["inference_count_before"] = _step(lambda: _inference_count(client))
        results["infer"] = _step(lambda: _infer(client, x))
        results["stream"] = _step(lambda: _stream(client, x))
        results["bad_shape"] = _step(lambda: _bad_shape(client))
        results["statistics"] = _step(
            lambda: client.get_inference_statistics(model_name=MODEL, as_json=True)
        )
        results["inference_count_after"] = _step(lambda: _inference_count(client))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--url", required=True, help="gateway address host:port")
    parser.add_argument("--input", required=True, help=".npy file, FP32 [N, 64] with N >= 3")
    args = parser.parse_args()
    x = np.load(args.input, allow_pickle=False)
    if x.dtype != np.float32 or x.ndim != 2 or x.shape[0] < STREAM_REQUESTS:
        print(f"--input must be FP32 [N>=3, 64], got {x.dtype} {x.shape}", file=sys.stderr)
        return 2
    json.dump(run(args.url, x), sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
