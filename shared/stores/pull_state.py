"""Per (peer, operation) state of the scheduled pulls from CPO peers (EMP role): cursor, schedule,
outcome of the last pulls. Written by evse_push's pull tasks, shown by the gateway's internal API."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import redis.asyncio as aioredis

from shared.settings import PeerConfig
from shared.stores.redis import KeySpace

PULL_EVSE_DATA = "PullEvseData"
PULL_EVSE_STATUS = "PullEvseStatus"
GET_CHARGE_DETAIL_RECORDS = "GetChargeDetailRecords"


@dataclass
class PullOutcome:
    """What one successful pull did."""

    kind: str  # full | delta | status
    pages: int = 0
    received: int = 0
    applied: int = 0
    invalid: int = 0
    operators: dict[str, list[str]] = field(default_factory=dict)
    """Operator norm -> [OperatorID, OperatorName] of every operator the answer had."""


def _iso(epoch: str | None) -> str | None:
    return datetime.fromtimestamp(float(epoch), UTC).isoformat() if epoch else None


class PullStateStore:
    """Per (peer, operation) pull state: the cursor (PullEvseData), when the last pull started and ended,
    the last error, the backoff, counters, and the operators the peer returned."""

    def __init__(self, redis: aioredis.Redis, keys: KeySpace) -> None:
        self._redis = redis
        self._keys = keys

    def _state_key(self, peer_key: str, operation: str) -> str:
        return self._keys.key("pulls", peer_key, operation)

    def _operators_key(self, peer_key: str, operation: str) -> str:
        return self._keys.key("pulls", peer_key, operation, "operators")

    async def _state(self, peer_key: str, operation: str) -> dict[str, str]:
        raw = await self._redis.hgetall(self._state_key(peer_key, operation))
        return {k.decode(): v.decode() for k, v in raw.items()}

    async def cursor(self, peer_key: str, operation: str = PULL_EVSE_DATA) -> datetime | None:
        """Where the next pull starts: the start of the last successful PullEvseData (the next LastCall) or
        the end of the last GetChargeDetailRecords window; None before the first."""
        raw = await self._redis.hget(self._state_key(peer_key, operation), "cursor")
        return datetime.fromisoformat(raw.decode()) if raw else None

    async def due_at(self, peer_key: str, operation: str, interval_seconds: float) -> float:
        """When the next pull is due (epoch seconds): after a failure its backoff, else one interval after
        the start of the last successful pull, at once if there was none."""
        state = await self._state(peer_key, operation)
        if state.get("next_attempt"):
            return float(state["next_attempt"])
        if state.get("last_success_started"):
            return float(state["last_success_started"]) + interval_seconds
        return 0.0

    async def record_success(
        self, peer_key: str, operation: str, started: datetime, outcome: PullOutcome, cursor: datetime | None
    ) -> None:
        mapping: dict[str, Any] = {
            "last_success": time.time(),
            "last_success_started": started.timestamp(),
            "last_kind": outcome.kind,
            "pages": outcome.pages,
            "records_received": outcome.received,
            "records_applied": outcome.applied,
            "records_invalid": outcome.invalid,
            "consecutive_failures": 0,
            "next_attempt": "",
        }
        if cursor is not None:
            mapping["cursor"] = cursor.isoformat(timespec="microseconds")
        key = self._state_key(peer_key, operation)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=mapping)
            pipe.hincrby(key, "records_applied_total", outcome.applied)
            await pipe.execute()

    async def record_failure(self, peer_key: str, operation: str, error: str, next_attempt: float) -> int:
        """Count a failed pull; the number of failures in a row."""
        key = self._state_key(peer_key, operation)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hincrby(key, "consecutive_failures", 1)
            pipe.hset(
                key, mapping={"last_error": error[:500], "last_error_at": time.time(), "next_attempt": next_attempt}
            )
            failures, _ = await pipe.execute()
        return int(failures)

    async def consecutive_failures(self, peer_key: str, operation: str) -> int:
        raw = await self._redis.hget(self._state_key(peer_key, operation), "consecutive_failures")
        return int(raw or 0)

    async def operators(self, peer_key: str, operation: str) -> dict[str, list[str]]:
        """Operator norm -> [OperatorID, OperatorName] of the operators the peer returned so far."""
        raw = await self._redis.hgetall(self._operators_key(peer_key, operation))
        return {k.decode(): orjson.loads(v) for k, v in raw.items()}

    async def replace_operators(self, peer_key: str, operation: str, operators: dict[str, list[str]]) -> None:
        key = self._operators_key(peer_key, operation)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            if operators:
                pipe.hset(key, mapping={norm: orjson.dumps(value) for norm, value in operators.items()})
            await pipe.execute()

    async def add_operators(self, peer_key: str, operation: str, operators: dict[str, list[str]]) -> None:
        if operators:
            await self._redis.hset(
                self._operators_key(peer_key, operation),
                mapping={norm: orjson.dumps(value) for norm, value in operators.items()},
            )

    async def pull_state(self, peer: PeerConfig) -> dict[str, Any]:
        """The peer's pull schedule and, per operation, what its pulls did (times in ISO 8601 UTC)."""
        view: dict[str, Any] = {
            "peer_id": peer.id,
            "schedule": peer.pull.model_dump(mode="json") if peer.pull else None,
        }
        for operation in (PULL_EVSE_DATA, PULL_EVSE_STATUS):
            view[operation] = await self.operation_state(peer.key, operation)
        return view

    async def operation_state(self, peer_key: str, operation: str) -> dict[str, Any]:
        """What the pulls of one operation from one peer did (times in ISO 8601 UTC)."""
        state = await self._state(peer_key, operation)
        entry: dict[str, Any] = {
            "last_success": _iso(state.get("last_success")),
            "last_success_started": _iso(state.get("last_success_started")),
            "last_kind": state.get("last_kind"),
            "last_error": state.get("last_error") or None,
            "last_error_at": _iso(state.get("last_error_at")),
            "consecutive_failures": int(state.get("consecutive_failures") or 0),
            "next_attempt": _iso(state.get("next_attempt")),
            "pages": int(state.get("pages") or 0),
            "records_received": int(state.get("records_received") or 0),
            "records_applied": int(state.get("records_applied") or 0),
            "records_invalid": int(state.get("records_invalid") or 0),
            "records_applied_total": int(state.get("records_applied_total") or 0),
            "operators": sorted(v[0] for v in (await self.operators(peer_key, operation)).values()),
        }
        if operation in (PULL_EVSE_DATA, GET_CHARGE_DETAIL_RECORDS):
            entry["cursor"] = state.get("cursor")  # the next LastCall / From, before the overlap
        return entry
