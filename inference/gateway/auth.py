"""Virtual API keys: the gateway stores only sha256 digests and maps each to a key id and org/team/project."""

from __future__ import annotations

import hashlib

from gpuledger.sections.gateway import VirtualKey
from inference.metering.asgi_body import Scope, bearer_token


class KeyRing:
    """Looks up a presented bearer key by its digest."""

    def __init__(self, keys: list[VirtualKey]) -> None:
        self._by_digest = {k.sha256: k for k in keys}

    def authenticate(self, scope: Scope) -> tuple[VirtualKey | None, str]:
        """The key (or None) and the id for the event: the key's id, else ``anonymous`` / ``unknown-<digest prefix>``."""
        token = bearer_token(scope)
        if token is None:
            return None, "anonymous"
        digest = hashlib.sha256(token.encode()).hexdigest()
        key = self._by_digest.get(digest)
        return (key, key.id) if key is not None else (None, f"unknown-{digest[:12]}")
