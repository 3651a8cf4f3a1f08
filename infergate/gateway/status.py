"""The one place where core errors become gRPC status codes."""

from __future__ import annotations

import grpc

from infergate.schema import errors

_CODES: tuple[tuple[type[errors.GatewayError], grpc.StatusCode], ...] = (
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.ModelNotReady, grpc.StatusCode.UNAVAILABLE),
    (errors.InvalidInput, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.QueueFull, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
    (errors.Cancelled, grpc.StatusCode.CANCELLED),
    (errors.BackendFailed, grpc.StatusCode.INTERNAL),
    (errors.ModelLoadError, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (errors.ArtifactTooLarge, grpc.StatusCode.RESOURCE_EXHAUSTED),
    # A corrupted upload: the client may retry it as it is, unlike INVALID_ARGUMENT.
    (errors.ChecksumMismatch, grpc.StatusCode.DATA_LOSS),
    (errors.PreconditionFailed, grpc.StatusCode.FAILED_PRECONDITION),
)


def status_code(error: errors.GatewayError) -> grpc.StatusCode:
    for error_type, code in _CODES:
        if isinstance(error, error_type):
            return code
    return grpc.StatusCode.UNKNOWN
