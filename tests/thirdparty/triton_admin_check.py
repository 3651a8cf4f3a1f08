"""Drive a gateway's model control with Triton's own Python gRPC client; print JSON.

Run in a process of its own (tritonclient's generated protobuf code and infergate's
register the same `inference.*` symbols, so one process cannot import both):

    python tests/thirdparty/triton_admin_check.py --url 127.0.0.1:8001 --token T \
        --digits digits.onnx --scale1 s1.onnx --scale2 s2.onnx

scale1 / scale2 compute y = x * 1 and y = x * 2 on FP32 [batch, 4]. Every step is
recorded as {"ok": value} or {"error": {"type", "status", "message"}}, so one
failing call does not hide the others; the JSON object goes to stdout only.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient  # type: ignore[import-untyped]
from tritonclient.utils import InferenceServerException  # type: ignore[import-untyped]


def _tensor(name: str, dims: list[int]) -> dict[str, Any]:
    return {"name": name, "data_type": "TYPE_FP32", "dims": dims}


DIGITS_CONFIG = {
    "name": "mnist",
    "platform": "onnxruntime_onnx",
    "max_batch_size": 64,
    "input": [_tensor("x", [64])],
    "output": [_tensor("y", [10])],
    # Triton-only: skipped with a warning, as a Triton config.pbtxt would be.
    "version_policy": {"latest": {"num_versions": 1}},
}
SCALE_CONFIG = {
    "name": "scale",
    "max_batch_size": 8,
    "input": [_tensor("x", [4])],
    "output": [_tensor("y", [4])],
}


def _error(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, InferenceServerException):
        return {"type": type(exc).__name__, "status": exc.status(), "message": exc.message()}
    return {"type": type(exc).__name__, "status": None, "message": str(exc)}


def _step(fn: Callable[[], Any]) -> dict[str, Any]:
    try:
        return {"ok": fn()}
    except Exception as exc:
        return {"error": _error(exc)}


def _scale_answer(client: grpcclient.InferenceServerClient) -> float:
    x = np.full((1, 4), 3.0, np.float32)
    inp = grpcclient.InferInput("x", [1, 4], "FP32")
    inp.set_data_from_numpy(x)
    y = client.infer("scale", [inp]).as_numpy("y")
    return float(y[0, 0] / 3.0)


def _digits_shape(client: grpcclient.InferenceServerClient) -> list[int]:
    inp = grpcclient.InferInput("x", [2, 64], "FP32")
    inp.set_data_from_numpy(np.zeros((2, 64), np.float32))
    return list(client.infer("mnist", [inp]).as_numpy("y").shape)


def run(args: argparse.Namespace) -> dict[str, Any]:
    client = grpcclient.InferenceServerClient(url=args.url)
    auth = {"authorization": f"Bearer {args.token}"}
    digits = Path(args.digits).read_bytes()
    scale1 = Path(args.scale1).read_bytes()
    scale2 = Path(args.scale2).read_bytes()
    digits_json = json.dumps(DIGITS_CONFIG)
    scale_json = json.dumps(SCALE_CONFIG)
    results: dict[str, Any] = {}

    def load(
        name: str,
        config: str | None = None,
        files: dict[str, bytes] | None = None,
        headers: dict[str, str] | None = auth,
    ) -> Callable[[], bool]:
        def call() -> bool:
            client.load_model(name, headers=headers, config=config, files=files)
            return True

        return call

    results["load_without_token"] = _step(
        load("mnist", digits_json, {"file:1/model.onnx": digits}, headers=None)
    )
    results["load_wrong_token"] = _step(
        load(
            "mnist",
            digits_json,
            {"file:1/model.onnx": digits},
            headers={"authorization": "Bearer wrong-token-0123456789"},
        )
    )
    results["load_digits"] = _step(load("mnist", digits_json, {"file:1/model.onnx": digits}))
    results["digits_ready"] = _step(lambda: client.is_model_ready("mnist"))
    results["digits_infer_shape"] = _step(lambda: _digits_shape(client))

    results["load_scale_v1"] = _step(load("scale", scale_json, {"file:1/model.onnx": scale1}))
    results["scale_v1_answer"] = _step(lambda: _scale_answer(client))
    results["load_scale_v2"] = _step(load("scale", scale_json, {"file:2/model.onnx": scale2}))
    results["scale_v2_answer"] = _step(lambda: _scale_answer(client))
    results["load_scale_v2_again"] = _step(load("scale", scale_json, {"file:2/model.onnx": scale1}))
    results["index"] = _step(lambda: client.get_model_repository_index(as_json=True))

    results["reload_from_repository"] = _step(load("scale"))
    results["scale_after_reload"] = _step(lambda: _scale_answer(client))
    smaller = json.dumps({**SCALE_CONFIG, "max_batch_size": 2})
    results["reload_with_config"] = _step(load("scale", smaller))
    results["scale_config_after_reload"] = _step(
        lambda: client.get_model_config("scale", as_json=True)
    )

    results["unload_scale"] = _step(lambda: client.unload_model("scale", headers=auth) or True)
    results["scale_ready_after_unload"] = _step(lambda: client.is_model_ready("scale"))
    results["unload_without_token"] = _step(lambda: client.unload_model("mnist") or True)
    results["load_scale_back"] = _step(load("scale"))
    results["scale_after_load_back"] = _step(lambda: _scale_answer(client))

    results["load_corrupt"] = _step(
        load("broken", scale_json.replace("scale", "broken"), {"file:1/model.onnx": b"garbage"})
    )
    results["load_files_without_config"] = _step(load("nocfg", None, {"file:1/model.onnx": scale1}))
    results["load_bad_name"] = _step(load("../evil", scale_json, {"file:1/model.onnx": scale1}))
    results["load_bad_path"] = _step(load("scale", scale_json, {"file:3/../x": scale1}))
    results["load_unknown"] = _step(load("nope"))
    results["unload_unknown"] = _step(lambda: client.unload_model("nope", headers=auth) or True)
    results["digits_still_serving"] = _step(lambda: _digits_shape(client))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--digits", required=True)
    parser.add_argument("--scale1", required=True)
    parser.add_argument("--scale2", required=True)
    json.dump(run(parser.parse_args()), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
