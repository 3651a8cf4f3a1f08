"""Services on a grpc.aio server as generic handlers only, not registered methods.

Generated `add_*Servicer_to_server` functions (grpcio-tools >= 1.62) register each
service twice: as a generic handler and as "registered methods". For every
registered method, grpc.aio's server keeps a task waiting for that method's next
call, and on every call it runs `asyncio.wait(FIRST_COMPLETED)` over all of those
tasks: with the inference, admin, health and reflection services that is 30 tasks,
each given and then relieved of a done-callback, per RPC. With generic handlers only
there is one such task, whatever the number of methods, and a call finds its handler
by one dictionary lookup on its method's path. Measured with `python -m
bench.instructions` on the peer bench's `mlp_small` (instructions per request, all
threads, 16 in flight): 1,149,000 -> 1,003,000 (docs/performance.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

Wrap = Callable[[grpc.GenericRpcHandler], grpc.GenericRpcHandler]


class GenericOnly:
    """A stand-in for the server that generated `add_*_to_server` code registers with:
    generic handlers reach the server (each through `wrap`, e.g. an authorization
    check), registered-method tables are dropped."""

    def __init__(self, server: grpc.aio.Server, wrap: Wrap | None = None) -> None:
        self._server = server
        self._wrap = wrap

    def add_generic_rpc_handlers(self, handlers: Iterable[grpc.GenericRpcHandler]) -> None:
        wrap = self._wrap
        self._server.add_generic_rpc_handlers(
            tuple(handlers) if wrap is None else tuple(wrap(h) for h in handlers)
        )

    def add_registered_method_handlers(
        self, service: str, handlers: Mapping[str, grpc.RpcMethodHandler[Any, Any]]
    ) -> None:
        """Dropped: the generic handler registered alongside serves the same methods."""


def add_services(
    server: grpc.aio.Server,
    adders: Sequence[tuple[Callable[[Any, Any], None], object]],
    wrap: Wrap | None = None,
) -> None:
    """Each (generated add function, servicer) on `server`, as generic handlers only,
    each through `wrap` if given."""
    generic = GenericOnly(server, wrap)
    for add, servicer in adders:
        add(servicer, generic)


def add_reflection(
    server: grpc.aio.Server, service_names: Sequence[str], wrap: Wrap | None = None
) -> None:
    """Server reflection for `service_names` (and itself), as a generic handler only
    (reflection.enable_server_reflection would register its method too)."""
    names = (*service_names, reflection.SERVICE_NAME)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
        reflection.aio.ReflectionServicer(names), GenericOnly(server, wrap)
    )
