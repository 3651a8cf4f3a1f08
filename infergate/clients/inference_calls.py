"""The calls of inference.GRPCInferenceService, each written once for both faces.

Each function builds a Call (the request, how to read the answer, whether it may be
repeated) and does no I/O; Client and AsyncClient turn each into a method of the same
name and parameters. Every call takes `timeout_s`, its deadline (None: the client's).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial

import numpy as np

from infergate.clients.infer_messages import InputValue, Parameter, build_request, parse_response
from infergate.clients.transport import Call, same_response
from infergate.protocol import inference_pb2 as pb

Outputs = dict[str, np.ndarray]


def is_server_live(*, timeout_s: float | None = None) -> Call[bool]:
    """Whether the gateway answers at all."""
    return Call("ServerLive", pb.ServerLiveRequest(), lambda r: bool(r.live), timeout_s)


def is_server_ready(*, timeout_s: float | None = None) -> Call[bool]:
    """Whether the gateway has loaded its repository and takes requests."""
    return Call("ServerReady", pb.ServerReadyRequest(), lambda r: bool(r.ready), timeout_s)


def is_model_ready(model: str, version: str = "", *, timeout_s: float | None = None) -> Call[bool]:
    """Whether the model (that version; "" the one serving) takes requests now."""
    request = pb.ModelReadyRequest(name=model, version=version)
    return Call("ModelReady", request, lambda r: bool(r.ready), timeout_s)


def server_metadata(*, timeout_s: float | None = None) -> Call[pb.ServerMetadataResponse]:
    """The server's name, version and protocol extensions."""
    return Call("ServerMetadata", pb.ServerMetadataRequest(), same_response, timeout_s)


def model_metadata(
    model: str, version: str = "", *, timeout_s: float | None = None
) -> Call[pb.ModelMetadataResponse]:
    """The model's versions, platform, and its inputs and outputs (name, datatype, shape)."""
    request = pb.ModelMetadataRequest(name=model, version=version)
    return Call("ModelMetadata", request, same_response, timeout_s)


def model_config(
    model: str, version: str = "", *, timeout_s: float | None = None
) -> Call[pb.ModelConfigResponse]:
    """The model's configuration in effect (batching, cache, routing, tensors)."""
    request = pb.ModelConfigRequest(name=model, version=version)
    return Call("ModelConfig", request, same_response, timeout_s)


def model_statistics(
    model: str = "", version: str = "", *, timeout_s: float | None = None
) -> Call[pb.ModelStatisticsResponse]:
    """Triton-layout statistics: counts and cumulative times per model version
    ("" for every model that serves)."""
    request = pb.ModelStatisticsRequest(name=model, version=version)
    return Call("ModelStatistics", request, same_response, timeout_s)


def repository_index(
    ready: bool = False, *, timeout_s: float | None = None
) -> Call[list[pb.RepositoryIndexResponse.ModelIndex]]:
    """Every model in the repository with its state (only those ready, if `ready`)."""
    request = pb.RepositoryIndexRequest(ready=ready)
    return Call("RepositoryIndex", request, lambda r: list(r.models), timeout_s)


def infer(
    model: str,
    inputs: Mapping[str, InputValue],
    outputs: Sequence[str] | None = None,
    version: str = "",
    request_id: str = "",
    parameters: Mapping[str, Parameter] | None = None,
    *,
    timeout_s: float | None = None,
    retry: bool = False,
    bf16_as_float32: bool = False,
) -> Call[Outputs]:
    """Run the model on `inputs` (numpy arrays by input name); its outputs by name.

    outputs: names of the outputs wanted (None: all). retry: the request may be sent
    again if the gateway was unavailable (off by default: a repeat is not harmless for
    every caller). bf16_as_float32: BF16 outputs as float32 values instead of uint16
    bit patterns. See infer_messages for how each datatype is held in numpy.
    """
    request = build_request(model, inputs, outputs, version, request_id, parameters)
    parse = partial(parse_response, bf16_as_float32=True) if bf16_as_float32 else parse_response
    return Call("ModelInfer", request, parse, timeout_s, repeatable=retry)
