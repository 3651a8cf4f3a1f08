"""Turn exceptions raised under a servicer method into gRPC statuses."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Concatenate, ParamSpec, TypeVar

import grpc

from infergate.gateway.core.errors import GatewayError
from infergate.gateway.status import status_code

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")
S = TypeVar("S")


def grpc_errors(
    method: Callable[Concatenate[S, Any, grpc.aio.ServicerContext, P], Awaitable[R]],
) -> Callable[Concatenate[S, Any, grpc.aio.ServicerContext, P], Awaitable[R]]:
    """Abort with the mapped status on a GatewayError, INTERNAL on anything else."""

    @functools.wraps(method)
    async def wrapper(
        self: S, request: Any, context: grpc.aio.ServicerContext, *args: P.args, **kwargs: P.kwargs
    ) -> R:
        try:
            return await method(self, request, context, *args, **kwargs)
        except GatewayError as exc:
            await context.abort(status_code(exc), str(exc))
        except Exception as exc:
            if isinstance(exc, grpc.aio.AbortError):
                raise
            log.exception("unexpected error in %s", method.__name__)
            await context.abort(
                grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}"
            )
        raise AssertionError("context.abort returned")  # pragma: no cover

    return wrapper
