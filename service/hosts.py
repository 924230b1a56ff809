"""The Host header check: a DNS-rebinding page must not reach a loopback server that has no keys."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from service import errors, logs
from service.settings import Settings, is_loopback

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def allowed_hosts(settings: Settings) -> list[str] | None:
    """The host names requests may name; None: any.

    Without API keys every caller is admin, and a browser on the same machine is a caller: a
    page on attacker.example whose name rebinds to 127.0.0.1 could POST /v1/ingest. Its
    requests carry `Host: attacker.example`, so only loopback names are accepted then."""
    hosts = [h.lower() for h in settings.allowed_hosts]
    if "*" in hosts:
        return None
    if not settings.auth_enabled:
        return [*LOOPBACK_NAMES, *hosts]
    return hosts or None


def host_name(value: str) -> str:
    """`value` of a Host header without its port: "[::1]:8000" -> "::1", "a.b:80" -> "a.b"."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class HostCheckMiddleware:
    """400 for a request whose Host header names a host not in `hosts` (with or without its port)."""

    def __init__(self, app: ASGIApp, hosts: list[str]) -> None:
        self.app = app
        self.hosts = set(hosts)

    def allows(self, header: str) -> bool:
        name = host_name(header)
        return header.strip().lower() in self.hosts or name in self.hosts or (
            "127.0.0.1" in self.hosts and is_loopback(name))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        header = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"host"), "")
        if self.allows(header):
            await self.app(scope, receive, send)
            return
        logs.event("host_refused", 30, host=header[:100])
        response = errors.error_response(400, "host_not_allowed", "the Host header names a host this server "
                                         "does not serve (NOTESRAG_ALLOWED_HOSTS)")
        await response(scope, receive, send)
