"""The status lanes' assembled request bodies (``AssembledBody``, not validated when sent) must be
what the models accept: every ActionType, with records straight from the outbox as the status store
queues them."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from services.evse_push.sources import EvseStatusSource
from shared.oicp import AssembledBody, PushEvseStatusRequest

CHANGED_AT = datetime(2026, 11, 29, 12, 0, 0, 250000, tzinfo=UTC)


def queued(operator: str, status: str) -> bytes:
    """An outbox value in the shape the status store's Lua script writes (as_pending)."""
    return orjson.dumps({"o": operator, "s": status, "t": CHANGED_AT.isoformat()})


@pytest.mark.parametrize("action", ["fullLoad", "insert", "update", "delete"])
def test_assembled_status_request_validates(action: str) -> None:
    source = EvseStatusSource(store=None)  # type: ignore[arg-type]  # from_outbox/request need no store
    batch = {
        b"DE*BEN*E0001": queued("DE*BEN", "Available"),
        b"DE*BEN*E0002": queued("DE*BEN", "Occupied"),
        b"DE*BEN*E0003*1": queued("DE*BEN", "OutOfService"),
    }
    items = source.from_outbox(batch)
    assert items is not None
    assert [item.changed_at for item in items.values()] == [CHANGED_AT.timestamp()] * 3

    body = source.request(action, "DE*BEN", None, list(items.values()))

    assert isinstance(body, AssembledBody)
    model = PushEvseStatusRequest.model_validate(body.to_oicp())
    assert model.to_oicp() == body.to_oicp()  # nothing the model would drop, rename or add
    records = model.operator_evse_status.evse_status_record
    assert [(r.evse_id, r.evse_status.value) for r in records] == [
        ("DE*BEN*E0001", "Available"),
        ("DE*BEN*E0002", "Occupied"),
        ("DE*BEN*E0003*1", "OutOfService"),
    ]


def test_outbox_value_without_status_is_read_from_the_store() -> None:
    """A value of another shape (no status) makes the lane read the records instead."""
    source = EvseStatusSource(store=None)  # type: ignore[arg-type]
    assert source.from_outbox({b"DE*BEN*E0001": orjson.dumps({"t": CHANGED_AT.isoformat(), "n": "x"})}) is None
