"""Call a gateway with stubs generated from proto/ alone, and print what came back as JSON.

Run in a process of its own with the generated modules' folder first on sys.path
(they define the same protobuf symbols as infergate.protocol, so the two cannot share
a process), by tests/clients/test_generated_stubs.py:

    python generated_stub_check.py --stubs DIR --url HOST:PORT --token TOKEN

Nothing of infergate's is imported; the script checks that at the end.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import Any

import grpc
import numpy as np


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stubs", required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    args = parser.parse_args()
    sys.path.insert(0, args.stubs)
    pb = importlib.import_module("inference_pb2")
    pb_grpc = importlib.import_module("inference_pb2_grpc")
    apb = importlib.import_module("admin_pb2")
    apb_grpc = importlib.import_module("admin_pb2_grpc")

    x = np.linspace(-1, 1, 2 * 64, dtype=np.float32).reshape(2, 64)
    report: dict[str, Any] = {}
    with grpc.insecure_channel(args.url) as channel:
        inference = pb_grpc.GRPCInferenceServiceStub(channel)
        admin = apb_grpc.ModelAdminStub(channel)

        def request(request_id: str) -> Any:
            message = pb.ModelInferRequest(model_name="digits", id=request_id)
            tensor = message.inputs.add(name="x", datatype="FP32")
            tensor.shape.extend(x.shape)
            message.raw_input_contents.append(x.astype("<f4").tobytes())
            return message

        response = inference.ModelInfer(request("unary"), timeout=10)
        y = np.frombuffer(response.raw_output_contents[0], "<f4").reshape(response.outputs[0].shape)
        report["infer"] = {"id": response.id, "y": y.tolist()}

        answers = inference.ModelStreamInfer(iter([request("s1"), request("s2")]), timeout=10)
        report["stream"] = sorted((a.infer_response.id, a.error_message) for a in answers)

        metadata = inference.ModelMetadata(pb.ModelMetadataRequest(name="digits"), timeout=10)
        report["metadata"] = [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs]

        token = (("authorization", f"Bearer {args.token}"),)
        listed = admin.ListModels(apb.ListModelsRequest(), metadata=token, timeout=10)
        report["models"] = sorted(m.name for m in listed.models)
        described = admin.DescribeModel(
            apb.DescribeModelRequest(name="digits"), metadata=token, timeout=10
        )
        report["described"] = [described.name, described.state, described.config.max_batch_size]
        try:
            admin.ListModels(apb.ListModelsRequest(), timeout=10)
        except grpc.RpcError as exc:
            report["without_token"] = exc.code().name

    report["infergate_imported"] = sorted(m for m in sys.modules if m.startswith("infergate"))
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
