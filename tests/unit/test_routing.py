"""Hybrid routing: a direct peer first, else the default route (the hub), else none; an ID with
several readings (``DE*ABC`` is an OperatorID and a ProviderID) is explained in each."""

from __future__ import annotations

import pytest

from shared.peers.routing import DEFAULT_ROUTE, DIRECT, explain, pick
from shared.settings import PeerConfig, Role


def peer(peer_id: str, role: Role, **extra: object) -> PeerConfig:
    return PeerConfig.model_validate({"id": peer_id, "role": role.value, "base_url": "http://127.0.0.1:1", **extra})


CPO_DIRECT = peer("DE*GEF", Role.CPO)
CPO_HUB = peer("DE*HBS", Role.CPO, default_route=True)
EMP_DIRECT = peer("DE-GDF", Role.EMP)
EMP_OFF = peer("DE-OFF", Role.EMP, enabled=False)


class Registry:
    def __init__(self, peers: list[PeerConfig]) -> None:
        self.peers = peers

    async def enabled(self, role: Role | None = None) -> list[PeerConfig]:
        return [p for p in self.peers if p.enabled and (role is None or p.role is role)]


def test_a_direct_peer_wins_over_the_hub_in_any_spelling() -> None:
    for spelling in ("DE*GEF", "DEGEF", "de*gef"):
        route = pick([CPO_HUB, CPO_DIRECT], Role.CPO, spelling)
        assert (route.peer, route.via) == (CPO_DIRECT, DIRECT)


def test_other_ids_go_to_the_hub_else_nowhere() -> None:
    route = pick([CPO_DIRECT, CPO_HUB], Role.CPO, "DE*XYZ")
    assert (route.peer, route.via) == (CPO_HUB, DEFAULT_ROUTE)
    route = pick([CPO_DIRECT], Role.CPO, "DE*XYZ")
    assert (route.peer, route.via) == (None, None)


def test_disabled_peers_and_peers_of_the_other_role_never_route() -> None:
    assert pick([EMP_OFF], Role.EMP, "DE-OFF").peer is None
    assert pick([CPO_DIRECT], Role.EMP, "DE*GEF").peer is None


@pytest.mark.asyncio
async def test_explain_reads_each_kind_of_id() -> None:
    registry = Registry([CPO_DIRECT, CPO_HUB, EMP_DIRECT, EMP_OFF])
    [evse] = await explain(registry, "DE*GEF*E1234*1")  # type: ignore[arg-type]
    assert (evse["kind"], evse["peer_id"], evse["via"]) == ("EvseID", "DE*GEF", DIRECT)
    [evco] = await explain(registry, "DE-GDF-C12345678-X")  # type: ignore[arg-type]
    assert (evco["kind"], evco["peer_id"], evco["via"]) == ("EvcoID", "DE-GDF", DIRECT)
    both = {r["kind"]: r for r in await explain(registry, "DE*ABC")}  # type: ignore[arg-type]
    assert both["OperatorID"]["peer_id"] == "DE*HBS" and both["OperatorID"]["via"] == DEFAULT_ROUTE
    assert both["ProviderID"]["peer_id"] is None and both["ProviderID"]["via"] is None
    assert await explain(registry, "not an id") == []  # type: ignore[arg-type]
