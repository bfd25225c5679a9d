"""Who is asking, and which orgs they may see.

Two ways in, both configured under ``ui`` in the settings:
- a trusted authenticating reverse proxy (oauth2-proxy, Pomerium, an ingress with SSO) that sets
  a user and a groups header; the headers are believed only when the TCP peer is one of
  ``ui.trusted_proxies``, and a request that carries them from anywhere else is refused;
- hashed access tokens (``ui.tokens``: the SHA-256 of each token), sent as
  ``Authorization: Bearer <token>`` or kept in a cookie by the sign-in form.

The result is a ``Viewer``; the query layer, not the links, enforces what it may read.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from dataclasses import dataclass

from starlette.requests import Request

from gpuledger.settings import UISettings

COOKIE = "gpuledger_token"


class Refused(Exception):
    """The request may not see what it asked for: ``status`` is 401 (who are you?) or 403 (not yours)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Viewer:
    """A signed-in person; ``orgs`` is None for an admin, who sees every org."""

    name: str
    orgs: frozenset[str] | None

    @property
    def admin(self) -> bool:
        return self.orgs is None

    def may_see(self, org: str) -> bool:
        """Whether this viewer may see ``org``'s figures."""
        return self.orgs is None or org in self.orgs

    def check(self, org: str) -> None:
        """Refuse an org this viewer may not see (an edited URL ends here)."""
        if not self.may_see(org):
            raise Refused(403, f"{self.name} may not see org {org!r}")


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def from_token(token: str, ui: UISettings) -> Viewer:
    """The viewer a token belongs to (compared by digest, in constant time), or ``Refused`` (401)."""
    digest = token_digest(token)
    for entry in ui.tokens:
        if hmac.compare_digest(entry.sha256, digest):
            return Viewer(entry.name, None if entry.admin else frozenset(entry.orgs))
    raise Refused(401, "unknown access token")


def _trusted(peer: str | None, ui: UISettings) -> bool:
    if peer is None:
        return False
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(net, strict=False) for net in ui.trusted_proxies)


def _from_proxy(request: Request, user: str, ui: UISettings) -> Viewer:
    peer = request.client.host if request.client else None
    if not _trusted(peer, ui):
        raise Refused(403, f"identity header {ui.proxy_user_header} from {peer}, which is not a trusted proxy (ui.trusted_proxies)")
    groups = {g.strip() for g in request.headers.get(ui.proxy_groups_header, "").split(",") if g.strip()}
    if groups & set(ui.admin_groups):
        return Viewer(user, None)
    orgs = frozenset(org for group in groups for org in ui.group_orgs.get(group, []))
    if not orgs:
        raise Refused(403, f"{user} is in no group mapped to an org (ui.group_orgs)")
    return Viewer(user, orgs)


def is_https(request: Request, ui: UISettings) -> bool:
    """Whether the browser reached us over TLS: our own scheme, or ``X-Forwarded-Proto: https`` from a trusted proxy.

    A TLS ingress talks plain HTTP to the app, so without this the sign-in cookie would lose its Secure flag;
    the header is believed only from ``ui.trusted_proxies`` (anyone else could send it to downgrade or spoof).
    """
    if request.url.scheme == "https":
        return True
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return forwarded == "https" and _trusted(request.client.host if request.client else None, ui)


def authenticate(request: Request, ui: UISettings) -> Viewer:
    """The viewer behind ``request``, or ``Refused``."""
    user = request.headers.get(ui.proxy_user_header)
    if user:
        return _from_proxy(request, user, ui)
    scheme, _, bearer = request.headers.get("authorization", "").partition(" ")
    token = bearer.strip() if scheme.lower() == "bearer" else request.cookies.get(COOKIE, "")
    if token:
        return from_token(token, ui)
    if ui.anonymous == "admin":
        return Viewer("local admin", None)
    raise Refused(401, "sign in with an access token, or through the configured proxy")


def is_loopback(host: str) -> bool:
    """Anonymous admin access is only allowed on a loopback address."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
