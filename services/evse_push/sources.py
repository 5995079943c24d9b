"""What each push operation delivers: how a lane reads the current state of queued records and turns
them into OICP requests. One source per PushOperation, all over the node's own ("own" scope) stores.

A record key is what the outbox coalesces on: an EvseID (status, data), ``EvseID|ProviderID`` (EVSE
pricing) or ``OperatorID|ProviderID`` (a pricing-product document). Requests carry one OperatorID
(it is in the path), so a lane groups records by their operator (the source's "scope").
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from shared.oicp import (
    AssembledBody,
    OICPModel,
    PushEvseDataRequest,
    PushEvsePricingRequest,
    PushPricingProductDataRequest,
)
from shared.oicp.ids import normalize_id, operator_id_of_evse
from shared.oicp.operations import OPERATIONS_BY_NAME
from shared.settings import NodeSettings, PeerConfig, PushOperation
from shared.stores.evse_data import EvseDataStore
from shared.stores.evse_status import EvseStatusStore
from shared.stores.pricing import EvsePricingStore, PricingProductStore

ALL_PROVIDERS = "*"


@dataclass(frozen=True)
class Item:
    """The current state of one queued record: ``record`` None means it is gone."""

    key: str
    operator_id: str
    record: dict[str, Any] | None
    operator_name: str | None = None
    #: When the queued change happened (epoch seconds), if the outbox says: the propagation metric.
    changed_at: float | None = None


def for_provider(provider_id: str, peer: PeerConfig) -> bool:
    """Pricing is delivered to the provider it names, or to every provider when it names "*"."""
    return provider_id == ALL_PROVIDERS or normalize_id(provider_id) == peer.key


class PushSource(ABC):
    operation: PushOperation
    #: Deletions can be sent as ActionType ``delete``; otherwise a deletion resyncs the peer.
    sends_deletes: bool = True
    #: Every request is a ``fullLoad`` of one document (pricing products): no insert/update/known set.
    documents: bool = False
    #: OICP allows no empty list in this push (EVSEPricing is 1..n): an empty fullLoad is skipped.
    empty_full_load: bool = True

    def path(self, operator_id: str) -> str:
        return OPERATIONS_BY_NAME[self.operation.value].path.format(operatorID=operator_id)

    def relevant(self, peer: PeerConfig, key: str) -> bool:
        return True

    @abstractmethod
    async def current(self, keys: list[str]) -> dict[str, Item]:
        """The current state of each key (record None if it no longer exists)."""

    @abstractmethod
    async def keys_of_operator(self, operator_id: str, peer: PeerConfig) -> list[str]:
        """Every live key of one of the node's operators meant for ``peer`` (for a fullLoad)."""

    def from_outbox(self, batch: dict[bytes, bytes]) -> dict[str, Item] | None:
        """The items straight from the queued values, for sources whose outbox holds the latest
        state itself (saves every lane a read of the same records); None: read them."""
        return None

    async def gone(self, keys: list[str]) -> dict[str, Item]:
        """The last state of deleted records, for a ``delete`` body (sources that send deletes)."""
        return {}

    @abstractmethod
    def request(
        self, action: str, operator_id: str, operator_name: str | None, items: list[Item]
    ) -> OICPModel | AssembledBody:
        """One push request of ``items`` (all of one operator)."""


class EvseStatusSource(PushSource):
    operation = PushOperation.PUSH_EVSE_STATUS

    def __init__(self, store: EvseStatusStore) -> None:
        self.store = store

    def from_outbox(self, batch: dict[bytes, bytes]) -> dict[str, Item] | None:
        # The status store's Lua script queues {"o": OperatorID, "s": status, "t": changed at} and
        # overwrites it with every newer change, so the queued value is the current status.
        items = {}
        for field, raw in batch.items():
            value = orjson.loads(raw)
            if "s" not in value:
                return None
            key = field.decode()
            changed_at = datetime.fromisoformat(value["t"]).timestamp() if "t" in value else None
            items[key] = Item(key, value["o"], {"EvseID": key, "EvseStatus": value["s"]}, changed_at=changed_at)
        return items

    async def current(self, keys: list[str]) -> dict[str, Item]:
        stored = await self.store.get_many(keys)
        directory = await self.store.operators()
        items = {}
        for key, status in stored.items():
            norm = operator_id_of_evse(key)
            operator = directory.get(norm, norm)
            record = {"EvseID": key, "EvseStatus": status.status} if status else None
            items[key] = Item(key, operator, record)
        return items

    async def gone(self, keys: list[str]) -> dict[str, Item]:
        # A deleted status has no "last" status to repeat; OICP needs one in the body, and the
        # receiver deletes by EvseID: send the neutral Unknown.
        return {k: Item(k, operator_id_of_evse(k), {"EvseID": k, "EvseStatus": "Unknown"}) for k in keys}

    async def keys_of_operator(self, operator_id: str, peer: PeerConfig) -> list[str]:
        return await self.store.evse_ids_of_operator(operator_id)

    def request(
        self, action: str, operator_id: str, operator_name: str | None, items: list[Item]
    ) -> OICPModel | AssembledBody:
        # Every value was validated when it was stored (EvseIDs, statuses, the node's OperatorID):
        # assembled, not re-validated (the hottest path of a fan-out to many peers).
        return AssembledBody(
            {
                "ActionType": action,
                "OperatorEvseStatus": {
                    "OperatorID": operator_id,
                    "EvseStatusRecord": [i.record for i in items],
                },
            }
        )


class EvseDataSource(PushSource):
    operation = PushOperation.PUSH_EVSE_DATA

    def __init__(self, store: EvseDataStore) -> None:
        self.store = store

    async def current(self, keys: list[str]) -> dict[str, Item]:
        stored = await self.store.get_many(keys)
        return {
            key: Item(key, s.operator_id, s.record, s.operator_name) if s else Item(key, operator_id_of_evse(key), None)
            for key, s in stored.items()
        }

    async def gone(self, keys: list[str]) -> dict[str, Item]:
        last = await self.store.tombstones(keys)
        return {k: Item(k, s.operator_id, s.record, s.operator_name) for k, s in last.items() if s is not None}

    async def keys_of_operator(self, operator_id: str, peer: PeerConfig) -> list[str]:
        return await self.store.evse_ids_of_operator(operator_id)

    def request(self, action: str, operator_id: str, operator_name: str | None, items: list[Item]) -> OICPModel:
        return PushEvseDataRequest.model_validate(
            {
                "ActionType": action,
                "OperatorEvseData": {
                    "OperatorID": operator_id,
                    "OperatorName": operator_name or operator_id,
                    "EvseDataRecord": [i.record for i in items],
                },
            }
        )


class EvsePricingSource(PushSource):
    operation = PushOperation.PUSH_EVSE_PRICING
    # The delete body needs the product list the peer holds, which is gone with the record: a
    # deletion resyncs the peer's EVSE pricing instead (deletions are rare, the sets small).
    sends_deletes = False
    empty_full_load = False

    def __init__(self, store: EvsePricingStore) -> None:
        self.store = store

    def relevant(self, peer: PeerConfig, key: str) -> bool:
        return for_provider(key.rpartition("|")[2], peer)

    async def current(self, keys: list[str]) -> dict[str, Item]:
        stored = await self.store.get_many(keys)
        return {
            key: Item(key, s.operator_id, s.record.to_oicp())
            if s
            else Item(key, operator_id_of_evse(key.partition("|")[0]), None)
            for key, s in stored.items()
        }

    async def keys_of_operator(self, operator_id: str, peer: PeerConfig) -> list[str]:
        keys = await self.store.keys_for_provider(peer.id)
        return sorted(k for k in keys if operator_id_of_evse(k.partition("|")[0]) == normalize_id(operator_id))

    def request(self, action: str, operator_id: str, operator_name: str | None, items: list[Item]) -> OICPModel:
        return PushEvsePricingRequest.model_validate({"ActionType": action, "EVSEPricing": [i.record for i in items]})


class PricingProductSource(PushSource):
    operation = PushOperation.PUSH_PRICING_PRODUCT_DATA
    documents = True

    def __init__(self, store: PricingProductStore) -> None:
        self.store = store

    def relevant(self, peer: PeerConfig, key: str) -> bool:
        return for_provider(key.rpartition("|")[2], peer)

    async def current(self, keys: list[str]) -> dict[str, Item]:
        items = {}
        for key in keys:
            operator_id, _, provider_id = key.rpartition("|")
            stored = await self.store.get_document(operator_id, provider_id)
            items[key] = Item(key, operator_id, stored.data.to_oicp() if stored else None)
        return items

    async def keys_of_operator(self, operator_id: str, peer: PeerConfig) -> list[str]:
        documents = await self.store.documents_for_provider(peer.id)
        return sorted(
            f"{d.data.operator_id}|{d.data.provider_id}"
            for d in documents
            if normalize_id(d.data.operator_id) == normalize_id(operator_id)
        )

    def request(self, action: str, operator_id: str, operator_name: str | None, items: list[Item]) -> OICPModel:
        (item,) = items
        return PushPricingProductDataRequest.model_validate({"ActionType": action, "PricingProductData": item.record})


def pricing_product_key(operator_id: str, provider_id: str) -> str:
    return f"{operator_id}|{provider_id}"


def evse_pricing_key(evse_id: str, provider_id: str) -> str:
    return f"{evse_id}|{provider_id}"


def build_sources(
    settings: NodeSettings,
    status: EvseStatusStore,
    data: EvseDataStore,
    products: PricingProductStore,
    evse_pricing: EvsePricingStore,
) -> dict[PushOperation, PushSource]:
    return {
        PushOperation.PUSH_EVSE_STATUS: EvseStatusSource(status),
        PushOperation.PUSH_EVSE_DATA: EvseDataSource(data),
        PushOperation.PUSH_PRICING_PRODUCT_DATA: PricingProductSource(products),
        PushOperation.PUSH_EVSE_PRICING: EvsePricingSource(evse_pricing),
    }
