"""Turn exceptions raised under a servicer method into gRPC statuses."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias, TypeVar, cast

import grpc
from google.protobuf.message import DecodeError

from infergate.gateway import request_decoding
from infergate.gateway.status import status_code
from infergate.schema.errors import GatewayError

log = logging.getLogger(__name__)

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def grpc_errors(method: F) -> F:
    """Abort with the mapped status on a GatewayError, INTERNAL on anything else, and
    INVALID_ARGUMENT for request bytes that do not parse (request_decoding)."""

    @functools.wraps(method)
    async def wrapper(self: object, request: object, context: Context) -> Any:
        if type(request) is request_decoding.Undecodable:
            await context.abort(request_decoding.CODE, request.message)
        try:
            return await method(self, request, context)
        except GatewayError as exc:
            await context.abort(status_code(exc), str(exc))
        except grpc.aio.AbortError:
            raise
        except DecodeError as exc:  # a streamed request's bytes, parsed as it is read
            await context.abort(request_decoding.CODE, request_decoding.message(exc))
        except Exception as exc:
            log.exception("unexpected error in %s", method.__name__)
            await context.abort(
                grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}"
            )

    return cast(F, request_decoding.handles_undecodable(wrapper))
