"""Every OICP operation of the catalogue has a handler in the gateway (the endpoint looks it up
strictly: a missing one would fail at start, not answer wrongly)."""

from __future__ import annotations

from services.gateway.handlers import HANDLERS
from shared.oicp.operations import OPERATIONS


def test_every_operation_has_a_handler() -> None:
    assert {op.name for op in OPERATIONS} == set(HANDLERS)
