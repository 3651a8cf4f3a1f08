"""Bearer-token authentication, checked where gRPC looks up a call's handler.

Methods fall in three groups:
- admin: the infergate.admin.v1.ModelAdmin service and Triton's RepositoryModelLoad /
  RepositoryModelUnload. They need `authorization: Bearer <admin token>`. With no
  admin token configured they are refused outright (PERMISSION_DENIED: no
  credential could make them succeed, so a client must not retry with one), unless
  the gateway listens on loopback only and was started with --insecure-admin;
- exempt: the gRPC health service, which load balancers and orchestrators probe
  without credentials;
- everything else (inference, metadata, reflection): open, or, when an inference
  token is configured, needing it (the admin token works too).
A missing or wrong token is UNAUTHENTICATED. Tokens are compared in constant time.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from infergate.gateway.status import status_code
from infergate.protocol import admin_pb2 as apb
from infergate.protocol import inference_pb2 as pb
from infergate.schema.errors import GatewayError, PermissionDenied, Unauthenticated
from infergate.settings import Settings, SettingsError

log = logging.getLogger(__name__)

_INFERENCE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
ADMIN_SERVICE = apb.DESCRIPTOR.services_by_name["ModelAdmin"].full_name
ADMIN_METHODS = frozenset(
    {f"/{_INFERENCE}/RepositoryModelLoad", f"/{_INFERENCE}/RepositoryModelUnload"}
)
EXEMPT_PREFIXES = ("/grpc.health.v1.Health/",)
# Long enough that guessing is hopeless; `openssl rand -hex 32` makes a good one.
MIN_TOKEN_LENGTH = 16
_ENABLE_HINT = (
    "the admin service is disabled: start the gateway with INFERGATE_ADMIN_TOKEN=<token> "
    "(or --admin-token-file FILE) and call it with the metadata "
    "'authorization: Bearer <token>'; a gateway on a loopback address may instead be "
    "started with --insecure-admin to allow admin calls without a token"
)

Metadata = Sequence[tuple[str, str | bytes]] | None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class AuthPolicy:
    admin_tokens: tuple[bytes, ...] = ()  # empty: admin calls refused (unless insecure)
    insecure_admin: bool = False
    inference_tokens: tuple[bytes, ...] = ()  # empty: inference is open

    @classmethod
    def from_settings(cls, settings: Settings) -> AuthPolicy:
        """The policy the settings ask for; SettingsError when they are unsafe or unusable."""
        admin = _token(settings.admin_token, settings.admin_token_file, "ADMIN_TOKEN")
        inference = _token(
            settings.inference_token, settings.inference_token_file, "INFERENCE_TOKEN"
        )
        if settings.insecure_admin and not is_loopback(settings.host):
            raise SettingsError(
                f"--insecure-admin is allowed on a loopback address only, not on "
                f"{settings.host}: set an admin token (INFERGATE_ADMIN_TOKEN or "
                "--admin-token-file) instead"
            )
        if settings.insecure_admin and admin:
            log.warning("an admin token is set: --insecure-admin is ignored")
        admin_tokens = (admin,) if admin else ()
        inference_tokens = (inference, *admin_tokens) if inference else ()
        return cls(admin_tokens, settings.insecure_admin and not admin, inference_tokens)

    def check(self, method: str, metadata: Metadata) -> GatewayError | None:
        """Why the call is refused, or None when it may go on."""
        if method.startswith(f"/{ADMIN_SERVICE}/") or method in ADMIN_METHODS:
            if not self.admin_tokens:
                return None if self.insecure_admin else PermissionDenied(_ENABLE_HINT)
            return _check_bearer(metadata, self.admin_tokens, "admin calls")
        if not self.inference_tokens or method.startswith(EXEMPT_PREFIXES):
            return None
        return _check_bearer(metadata, self.inference_tokens, "this gateway")


def _check_bearer(
    metadata: Metadata, tokens: tuple[bytes, ...], what: str
) -> Unauthenticated | None:
    values = [v for k, v in metadata or () if k == "authorization"]
    if not values:
        return Unauthenticated(
            f"{what} need a token: send the metadata 'authorization: Bearer <token>'"
        )
    raw = values[0]
    value = raw.decode("latin-1") if isinstance(raw, bytes) else raw
    scheme, _, given = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return Unauthenticated("the authorization metadata must read 'Bearer <token>'")
    presented = given.strip().encode()
    # Every token is compared, so the time taken does not tell which one came close.
    matches = [hmac.compare_digest(presented, token) for token in tokens]
    if any(matches):
        return None
    return Unauthenticated(f"the bearer token is not valid for {what}")


def _token(value: str, file: Path | None, variable: str) -> bytes:
    if file is not None:  # a file wins over the variable, as flags win over the environment
        try:
            value = file.read_text().strip()
        except OSError as exc:
            raise SettingsError(f"cannot read the token file {file}: {exc}") from exc
        if not value:
            raise SettingsError(f"the token file {file} is empty")
    if not value:
        return b""
    if len(value) < MIN_TOKEN_LENGTH:
        raise SettingsError(
            f"the {variable.lower().replace('_', ' ')} must be at least {MIN_TOKEN_LENGTH} "
            "characters (for example: openssl rand -hex 32)"
        )
    if not (value.isascii() and value.isprintable()) or " " in value:
        raise SettingsError(
            f"the {variable.lower().replace('_', ' ')} must be printable ASCII without spaces "
            "(it travels in gRPC metadata)"
        )
    return value.encode()


# ---- the check on every call ----------------------------------------------------------


class Guarded(grpc.GenericRpcHandler):
    """A service's handlers, each call checked against the AuthPolicy first; a refused
    call gets a handler that only aborts, before the service's handler runs.

    In the handler lookup, which grpc.aio calls as a plain function, rather than a
    server interceptor, which it runs as a coroutine on every call: about 1% fewer
    instructions per request at 16 in flight, too little to see one at a time
    (`python -m bench.instructions`, docs/performance.md).
    """

    def __init__(self, inner: grpc.GenericRpcHandler, policy: AuthPolicy) -> None:
        self._inner = inner
        self._policy = policy

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = self._inner.service(handler_call_details)
        if handler is None:  # not this service's method
            return None
        method = handler_call_details.method
        error = self._policy.check(method, handler_call_details.invocation_metadata)
        if error is None:
            return handler
        log.warning("refused %s: %s", method, type(error).__name__)
        return _refusal(handler, error)


def _refusal(
    handler: grpc.RpcMethodHandler[Any, Any], error: GatewayError
) -> grpc.RpcMethodHandler[Any, Any]:
    """A handler of the same shape as `handler` that only aborts with the error."""
    code, message = status_code(error), str(error)

    async def unary_response(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(code, message)

    async def stream_response(
        request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        await context.abort(code, message)
        yield  # never reached: makes this an async generator, as streaming handlers are

    codecs: dict[str, Any] = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(unary_response, **codecs)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(stream_response, **codecs)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(unary_response, **codecs)
    return grpc.stream_stream_rpc_method_handler(stream_response, **codecs)
