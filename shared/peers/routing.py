"""Hybrid routing (ARCHITECTURE §7): which peer a call for an ID goes to.

An ID of a partner this node roams with directly goes to that peer; any other goes to the peer marked
``default_route`` (the hub), which relays it; with neither there is no route (OICP ``300`` Partner not
found). An EvseID routes by its OperatorID to a CPO peer, an EvcoID by its ProviderID to an EMP peer.
Every service routes through here, and ``GET /routes/{id}`` of the internal API shows the decision.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from shared.oicp.ids import (
    EVCO_ID_PATTERN,
    EVSE_ID_PATTERN,
    OPERATOR_ID_PATTERN,
    PROVIDER_ID_PATTERN,
    normalize_id,
    operator_id_of_evse,
    provider_id_of_evco,
)
from shared.peers.registry import PeerRegistry
from shared.settings import PeerConfig, Role

DIRECT = "direct"
DEFAULT_ROUTE = "default_route"


@dataclass(frozen=True)
class Route:
    """Where a call for ``key`` (a normalised OperatorID or ProviderID) goes, and why."""

    role: Role  # the role of the peer that serves the ID
    key: str
    peer: PeerConfig | None
    via: str | None  # DIRECT | DEFAULT_ROUTE | None (no route)

    def as_dict(self) -> dict[str, Any]:
        return {
            "role": self.role.value,
            "key": self.key,
            "peer_id": self.peer.id if self.peer else None,
            "via": self.via,
        }


def pick(peers: list[PeerConfig], role: Role, key: str) -> Route:
    """The route among ``peers`` (enabled ones): a direct peer of that ID, else the default route."""
    key = normalize_id(key).lstrip("+")
    candidates = [p for p in peers if p.role is role and p.enabled]
    direct = next((p for p in candidates if p.key.lstrip("+") == key), None)
    if direct is not None:
        return Route(role, key, direct, DIRECT)
    hub = next((p for p in candidates if p.default_route), None)
    return Route(role, key, hub, DEFAULT_ROUTE if hub else None)


async def route_operator(registry: PeerRegistry, operator_id: str) -> Route:
    """The CPO peer for an OperatorID."""
    return pick(await registry.enabled(Role.CPO), Role.CPO, operator_id)


async def route_provider(registry: PeerRegistry, provider_id: str) -> Route:
    """The EMP peer for a ProviderID."""
    return pick(await registry.enabled(Role.EMP), Role.EMP, provider_id)


async def route_evse(registry: PeerRegistry, evse_id: str) -> Route | None:
    """The CPO peer for an EvseID (None if it is not an EvseID)."""
    try:
        return await route_operator(registry, operator_id_of_evse(evse_id))
    except ValueError:
        return None


async def route_evco(registry: PeerRegistry, evco_id: str) -> Route | None:
    """The EMP peer for an EvcoID (None if it is not an EvcoID)."""
    try:
        return await route_provider(registry, provider_id_of_evco(evco_id))
    except ValueError:
        return None


_KINDS = (
    ("EvseID", re.compile(EVSE_ID_PATTERN)),
    ("EvcoID", re.compile(EVCO_ID_PATTERN)),
    ("OperatorID", re.compile(OPERATOR_ID_PATTERN)),
    ("ProviderID", re.compile(PROVIDER_ID_PATTERN)),
)


async def explain(registry: PeerRegistry, any_id: str) -> list[dict[str, Any]]:
    """Every reading of ``any_id`` with its route: an ID such as ``DE*ABC`` is a valid OperatorID and
    ProviderID at once, and the answer shows both (empty if it is no OICP ID at all)."""
    readings = []
    for kind, pattern in _KINDS:
        if not pattern.match(any_id):
            continue
        if kind == "EvseID":
            route = await route_evse(registry, any_id)
        elif kind == "EvcoID":
            route = await route_evco(registry, any_id)
        elif kind == "OperatorID":
            route = await route_operator(registry, any_id)
        else:
            route = await route_provider(registry, any_id)
        if route is not None:
            readings.append({"id": any_id, "kind": kind, **route.as_dict()})
    return readings
