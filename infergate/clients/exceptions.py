"""What a failed call raises: one class per gRPC status that a caller handles differently.

Every one is a ClientError carrying the status `code` and the server's `message`, so
`except ClientError` catches them all and `except Overloaded` only the one to back off
from. The names follow the gateway's own errors (infergate.schema.errors), but these
are the client's: it knows only the status code that came over the wire.

InferenceError and AdminError are other names for ClientError, kept because code
written against the first client catches them.
"""

from __future__ import annotations

from typing import Any

import grpc


class ClientError(Exception):
    """A call the server refused or failed, or that could not reach it."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:
        # Made again from code and message, whatever the subclass's own parameters, so
        # that an error crosses a process boundary (multiprocessing, concurrent.futures).
        return (_restore, (type(self), self.code, self.message))


def _restore(kind: type[ClientError], code: grpc.StatusCode, message: str) -> ClientError:
    error = kind.__new__(kind)
    ClientError.__init__(error, code, message)
    return error


InferenceError = ClientError
AdminError = ClientError


class ModelNotFound(ClientError):
    """NOT_FOUND: no such model or version."""


class InvalidInput(ClientError):
    """INVALID_ARGUMENT: the request does not fit the protocol or the model (datatype,
    shape, names), or an uploaded model or config was refused."""


class Overloaded(ClientError):
    """RESOURCE_EXHAUSTED: the model's queue is full (back off and try later), or a
    message or artifact is larger than the gateway accepts."""


class DeadlineExceeded(ClientError):
    """DEADLINE_EXCEEDED: the call's time ran out before its answer came."""


class Cancelled(ClientError):
    """CANCELLED: the call was cancelled before it finished."""


class Unauthenticated(ClientError):
    """UNAUTHENTICATED: no token, or not the right one (`authorization: Bearer <token>`)."""


class PermissionDenied(ClientError):
    """PERMISSION_DENIED: no credential allows this call here (the admin service is off)."""


class Unavailable(ClientError):
    """UNAVAILABLE: the gateway cannot be reached, is shutting down, or the model cannot
    serve now. Safe calls are retried on it (RetryPolicy) before this is raised."""


class AlreadyExists(ClientError):
    """ALREADY_EXISTS: that model version exists already (versions are never overwritten)."""


class FailedPrecondition(ClientError):
    """FAILED_PRECONDITION: the gateway's configuration or state does not allow the call."""


class DataLoss(ClientError):
    """DATA_LOSS: uploaded bytes do not match their SHA-256; the upload may be repeated."""


class ServerError(ClientError):
    """INTERNAL (or UNKNOWN): the server failed; the request itself may be fine."""


class Unimplemented(ClientError):
    """UNIMPLEMENTED: the server does not offer this call."""


class StreamError(ClientError):
    """One request on a stream failed. The stream protocol carries only a message for
    it, no status, so its code is always UNKNOWN; the stream itself goes on."""

    def __init__(self, message: str) -> None:
        super().__init__(grpc.StatusCode.UNKNOWN, message)


_BY_CODE: dict[grpc.StatusCode, type[ClientError]] = {
    grpc.StatusCode.NOT_FOUND: ModelNotFound,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidInput,
    grpc.StatusCode.RESOURCE_EXHAUSTED: Overloaded,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.CANCELLED: Cancelled,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.DATA_LOSS: DataLoss,
    grpc.StatusCode.INTERNAL: ServerError,
    grpc.StatusCode.UNKNOWN: ServerError,
    grpc.StatusCode.UNIMPLEMENTED: Unimplemented,
}


def error_for(code: grpc.StatusCode, message: str) -> ClientError:
    """The exception for a status: its own class, or ClientError for the rare ones."""
    return _BY_CODE.get(code, ClientError)(code, message)


def from_rpc_error(exc: grpc.RpcError) -> ClientError:
    """The exception for a failed gRPC call (sync or asyncio), with its status and details."""
    # grpc.RpcError itself declares neither; the errors gRPC raises (grpc.Call,
    # grpc.aio.AioRpcError) have both.
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = exc.details() if hasattr(exc, "details") else str(exc)
    return error_for(code, details or "")
