"""Client library for infergate (and any Open Inference Protocol v2 gRPC server)."""

from infergate.clients.client import (
    AsyncClient,
    Client,
    InferenceError,
    build_request,
    parse_response,
)

__all__ = ["AsyncClient", "Client", "InferenceError", "build_request", "parse_response"]
