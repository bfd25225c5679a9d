"""``POST /v1/outcomes``: applications report business outcomes with the same virtual keys they call models with.

The payer comes from the key: its org always, its team and project where the key has them (a
body may narrow a key without a team to one of its teams, never widen or change it). The outcome
is published to the outcomes topic and the answer (202) waits for Kafka's ack, so an accepted
outcome is never lost; Kafka away answers 503 and the client retries (a resend replaces itself).
"""

from __future__ import annotations

import asyncio
import json

import structlog
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gpuledger.kafka import AckedSender
from gpuledger.outcome_input import OutcomeIn, outcome_key
from gpuledger.sections.gateway import VirtualKey
from inference.gateway.auth import KeyRing
from inference.metering.asgi_body import BodyTooLarge, ClientGone, read_body
from inference.metering.errors import error_body
from inference.metering.metrics import REFUSALS, labelled
from schemas import OutcomeEvent, codec_for

log = structlog.get_logger()
CODEC = codec_for(OutcomeEvent)
PAYER_FIELDS = ("org", "team", "project")


def _error(status: int, message: str, code: str, param: str | None = None, kind: str = "invalid_request_error") -> Response:
    labelled(REFUSALS, f"outcome_{code}").inc()
    return Response(error_body(message, kind, code, param), status, media_type="application/json")


def _payer_problem(body: dict[str, object], key: VirtualKey) -> str | None:
    """Why the body's org/team/project contradict the key's, or None."""
    for name in PAYER_FIELDS:
        given, own = body.get(name), getattr(key, name)
        if given not in (None, "") and own and given != own:
            return f"'{name}' is {given!r} but this key belongs to {name} {own!r}; leave it out (the key says who reports it)"
    return None


class OutcomesRoute:
    """Validates an outcome, fills its payer from the key, publishes it acked."""

    def __init__(self, keys: KeyRing, sender: AckedSender, topic: str, *, max_body_bytes: int, timeout_s: float = 10.0) -> None:
        self.keys, self.sender, self.topic = keys, sender, topic
        self.max_body_bytes, self.timeout_s = max_body_bytes, timeout_s

    async def endpoint(self, request: Request) -> Response:
        """The Starlette endpoint of the route."""
        key, _ = self.keys.authenticate(request.scope)
        if key is None:
            return _error(401, "Missing or invalid API key: send 'Authorization: Bearer <your gateway key>'.", "invalid_api_key")
        try:
            raw = await read_body(request.receive, self.max_body_bytes)
        except BodyTooLarge:
            return _error(
                413,
                f"Request body is larger than this gateway's limit of {self.max_body_bytes} bytes; send one outcome per request.",
                "request_too_large",
            )
        except ClientGone:
            return Response(status_code=499)
        try:
            body = json.loads(raw)
        except ValueError as exc:
            return _error(400, f"Request body is not valid JSON ({exc}); send one outcome as a JSON object.", "invalid_json")
        if not isinstance(body, dict):
            return _error(400, "Request body must be a JSON object (one outcome).", "invalid_json")
        problem = _payer_problem(body, key)
        if problem:
            return _error(403, problem, "payer_mismatch", kind="permission_error")
        filled = {**body, **{name: getattr(key, name) for name in PAYER_FIELDS if getattr(key, name)}}
        try:
            outcome = OutcomeIn.model_validate(filled)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or None
            others = f" ({len(exc.errors()) - 1} more problem(s))" if len(exc.errors()) > 1 else ""
            return _error(400, f"{where or 'outcome'}: {first['msg'].removeprefix('Value error, ')}{others}", "invalid_outcome", where)
        record = outcome.record(key_id=key.id)
        try:
            async with asyncio.timeout(self.timeout_s):
                await self.sender.send_all(self.topic, [(outcome_key(record.outcome_id), CODEC.encode(record))])
        except Exception as exc:  # noqa: BLE001 - Kafka away or slow: the client must retry, nothing was recorded for sure
            log.warning("outcome_not_recorded", error=type(exc).__name__, topic=self.topic)
            return _error(
                503,
                "The outcome could not be recorded right now (Kafka unavailable); retry it: a resend replaces itself.",
                "outcome_not_recorded",
                kind="server_error",
            )
        return JSONResponse(
            {
                "id": record.outcome_id,
                "object": "outcome",
                "status": "accepted",
                "org": record.org,
                "team": record.team,
                "project": record.project,
                "key_id": record.key_id,
            },
            202,
        )
