"""The sessions service. Until its logic lands (session ledger, remote start/stop, reservations,
notifications: issue #4) it consumes its command queue and rejects every command to the
dead-letter queue with a command.rejected event."""

from __future__ import annotations

from faststream import FastStream

from shared.bus.reserved import create_reserved_worker
from shared.settings import NodeSettings

SERVICE = "sessions"


def create_app(settings: NodeSettings) -> FastStream:
    return create_reserved_worker(
        settings, SERVICE, "session ledger, remote start/stop, reservations, notifications: issue #4"
    )
