"""Client library for infergate (and any Open Inference Protocol v2 gRPC server).

It needs grpcio, protobuf and numpy only: `pip install infergate` installs it without
the gateway's runtimes. docs/clients.md shows every part in use.

- Client / AsyncClient: inference, metadata, readiness, statistics, streaming.
- AdminClient / AsyncAdminClient: register (with progress), update, describe, list,
  unregister models.
- ClientError and its subclasses: what failed calls raise, by status.
- Tls, RetryPolicy: how to connect and when to try again.
"""

from infergate.clients.admin_calls import Artifact, ConfigUpdate, batching
from infergate.clients.admin_client import AdminClient, AsyncAdminClient
from infergate.clients.bfloat16 import from_bf16, to_bf16
from infergate.clients.client import AsyncClient, Client
from infergate.clients.connection import Tls
from infergate.clients.exceptions import (
    AdminError,
    AlreadyExists,
    Cancelled,
    ClientError,
    DataLoss,
    DeadlineExceeded,
    FailedPrecondition,
    InferenceError,
    InvalidInput,
    ModelNotFound,
    Overloaded,
    PermissionDenied,
    ServerError,
    StreamError,
    Unauthenticated,
    Unavailable,
    Unimplemented,
)
from infergate.clients.infer_messages import Tensor, build_request, parse_response
from infergate.clients.retry import NO_RETRY, RetryPolicy
from infergate.clients.streaming import InferRequest, StreamResult
from infergate.clients.upload_progress import ProgressBar

__all__ = [
    "NO_RETRY",
    "AdminClient",
    "AdminError",
    "AlreadyExists",
    "Artifact",
    "AsyncAdminClient",
    "AsyncClient",
    "Cancelled",
    "Client",
    "ClientError",
    "ConfigUpdate",
    "DataLoss",
    "DeadlineExceeded",
    "FailedPrecondition",
    "InferRequest",
    "InferenceError",
    "InvalidInput",
    "ModelNotFound",
    "Overloaded",
    "PermissionDenied",
    "ProgressBar",
    "RetryPolicy",
    "ServerError",
    "StreamError",
    "StreamResult",
    "Tensor",
    "Tls",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "batching",
    "build_request",
    "from_bf16",
    "parse_response",
    "to_bf16",
]
