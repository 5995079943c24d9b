"""Compatibility profiles (shared/peers/profiles.py): validation with errors that name the key, each
transformation on its own, the built-in profiles' differences, the settings and the registry's
resolution, and PeerClient.call putting them on the wire (a recording aiohttp server plays the peer)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio
import yaml
from aiohttp import web
from pydantic import ValidationError

from shared.oicp import Acknowledgement, AssembledBody
from shared.oicp.messages import (
    AuthorizeRemoteReservationStartRequest,
    GetChargeDetailRecordsRequest,
    PullEvseStatusByIdRequest,
    PullEvseStatusByOperatorIdRequest,
    PullEvseStatusRequest,
)
from shared.oicp.operations import OPERATIONS_BY_NAME
from shared.peers.client import PeerClient
from shared.peers.profiles import (
    BUILTIN_PROFILES,
    CompatibilityProfile,
    DateTimeStyle,
    datetime_keys,
    inbound_aliases,
    match_catalogue_path,
    resolve_profiles,
)
from shared.settings import ConfigError, PeerConfig, load_settings

RESERVATION_START = OPERATIONS_BY_NAME["AuthorizeRemoteReservationStart"].path
STATUS = OPERATIONS_BY_NAME["PullEvseStatus"].path
BY_ID = OPERATIONS_BY_NAME["PullEvseStatusById"].path
BY_OPERATOR = OPERATIONS_BY_NAME["PullEvseStatusByOperatorId"].path
PUSH_STATUS = OPERATIONS_BY_NAME["PushEvseStatus"].path
WWCP_START = "/api/oicp/charging/v21/providers/{providerID}/authorize-remote-reservation/start"
STRICT = BUILTIN_PROFILES["strict"]
HUBJECT = BUILTIN_PROFILES["hubject"]


def profile(**keys: Any) -> CompatibilityProfile:
    return CompatibilityProfile.model_validate(keys)


def reservation(**extra: Any) -> AuthorizeRemoteReservationStartRequest:
    return AuthorizeRemoteReservationStartRequest.model_validate(
        {
            "ProviderID": "DE-GDF",
            "EvseID": "DE*GEF*E1234*1",
            "Identification": {"RemoteIdentification": {"EvcoID": "DE-GDF-C12345678-X"}},
            "SessionID": "b2688855-7f00-0002-6d8e-48d883f6abb6",
            "EMPPartnerSessionID": "emp-4711",
            "Duration": 10,
            **extra,
        }
    )


def cdr_request(**extra: Any) -> GetChargeDetailRecordsRequest:
    return GetChargeDetailRecordsRequest.model_validate(
        {
            "ProviderID": "DE-GDF",
            "From": "2026-11-29T10:00:00.250+01:00",
            "To": "2026-11-29T11:30:00Z",
            "CDRForwarded": False,
            **extra,
        }
    )


# ---- validation: clear errors naming the key -----------------------------------------------------


@pytest.mark.parametrize(
    ("keys", "needle"),
    [
        ({"paths": {"ReservationStart": WWCP_START}}, "'ReservationStart' is not an OICP operation"),
        ({"paths": {"AuthorizeRemoteReservationStart": "api/x"}}, "not an absolute path"),
        ({"paths": {"AuthorizeRemoteReservationStart": "/x?a=1"}}, "not an absolute path"),
        ({"paths": {"AuthorizeRemoteReservationStart": "/x/{operatorID}"}}, "placeholder {operatorID}"),
        ({"paths": {"ChargingNotification": "/x/{providerID}"}}, "(none allowed)"),
        ({"inbound_paths": {"PushEvseStatus": [PUSH_STATUS]}}, "is a catalogue path already"),
        ({"field_names": {"Push": {"EvseID": "EvseId"}}}, "'Push' is not an OICP operation or *"),
        ({"field_names": {"*": {"Evse ID": "EvseId"}}}, "'Evse ID' is not an OICP field name"),
        ({"field_names": {"*": {"A": "X", "B": "X"}}}, "cannot be read back"),
        ({"batch_limits": {"PullEvseData": 10}}, "'PullEvseData' is not a push operation"),
        ({"batch_limits": {"PushEvseStatus": 0}}, "not within 1..10000"),
        ({"datetime": {"timezone": "Mars/Olympus"}}, "unknown time zone 'Mars/Olympus'"),
        ({"datetime": {"format": "iso_z", "timezone": "Europe/Berlin"}}, "writes UTC"),
        ({"datetime": {"format": "rfc822"}}, "datetime.format"),
        ({"id_segment": "lower"}, "id_segment"),
        ({"status_variants": "both"}, "status_variants"),
        ({"base": "wwcp"}, "'wwcp' is not a built-in profile"),
        ({"pathz": {}}, "pathz"),
    ],
)
def test_invalid_profiles_are_refused_naming_the_key(keys: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValidationError) as caught:
        profile(**keys)
    assert needle in str(caught.value), str(caught.value)


def test_a_user_profile_may_not_take_a_builtin_name() -> None:
    with pytest.raises(ValueError, match="'hubject' is a built-in profile"):
        resolve_profiles({"hubject": profile()})


def test_two_profiles_giving_one_inbound_path_to_different_operations_are_refused() -> None:
    resolved = resolve_profiles(
        {
            "a": profile(inbound_paths={"PushEvseStatus": ["/x/{operatorID}"]}),
            "b": profile(inbound_paths={"PushEvseData": ["/x/{operatorID}"]}),
        }
    )
    with pytest.raises(ValueError, match="is PushEvseStatus's in another profile"):
        inbound_aliases(resolved)


# ---- paths and ID segments -----------------------------------------------------------------------


def test_catalogue_paths_are_matched_with_their_id() -> None:
    assert match_catalogue_path(RESERVATION_START.format(providerID="DE-GDF")) == (
        OPERATIONS_BY_NAME["AuthorizeRemoteReservationStart"],
        "DE-GDF",
    )
    assert match_catalogue_path(BY_ID.format(providerID="DE*GDF"))[0].name == "PullEvseStatusById"  # type: ignore[index]
    assert match_catalogue_path("/api/oicp/notificationmgmt/v11/charging-notifications") == (
        OPERATIONS_BY_NAME["ChargingNotification"],
        None,
    )
    assert match_catalogue_path("/somewhere/else") is None


@pytest.mark.parametrize(
    ("segment", "spelled"),
    [("as_is", "DE*GDF"), ("without_separators", "DEGDF"), ("url_encoded", "DE%2AGDF")],
)
def test_path_override_and_id_segment(segment: str, spelled: str) -> None:
    wwcp = profile(paths={"AuthorizeRemoteReservationStart": WWCP_START}, id_segment=segment)
    path, _ = wwcp.outbound(RESERVATION_START.format(providerID="DE*GDF"), reservation(ProviderID="DE*GDF"))
    assert path == f"/api/oicp/charging/v21/providers/{spelled}/authorize-remote-reservation/start"
    # an operation without an override keeps its catalogue path, with the ID spelled the same way
    other, _ = wwcp.outbound(PUSH_STATUS.format(operatorID="DE*GEF"), AssembledBody({}))
    assert other == PUSH_STATUS.format(operatorID=spelled.replace("GDF", "GEF"))


def test_url_encoding_covers_din_ids() -> None:
    assert profile(id_segment="url_encoded").spell_id("+49*536") == "%2B49%2A536"


def test_a_path_outside_the_catalogue_is_left_alone() -> None:
    wwcp = profile(paths={"AuthorizeRemoteReservationStart": WWCP_START}, field_names={"*": {"EvseID": "EvseId"}})
    body = AssembledBody({"EvseID": "x"})
    assert wwcp.outbound("/not/oicp", body) == ("/not/oicp", {"EvseID": "x"})


@pytest.mark.parametrize(
    ("variants", "by_id", "by_operator"),
    [("separate_paths", BY_ID, BY_OPERATOR), ("single_path", STATUS, STATUS)],
)
def test_status_variants(variants: str, by_id: str, by_operator: str) -> None:
    chosen = profile(status_variants=variants)
    id_body = PullEvseStatusByIdRequest.model_validate({"ProviderID": "DE-GDF", "EvseID": ["DE*GEF*E1"]})
    op_body = PullEvseStatusByOperatorIdRequest.model_validate({"ProviderID": "DE-GDF", "OperatorID": ["DE*GEF"]})
    full = PullEvseStatusRequest.model_validate({"ProviderID": "DE-GDF"})
    # whichever path the caller formatted, the variant the body asks for decides
    for path in (BY_ID, STATUS):
        assert chosen.outbound(path.format(providerID="DE-GDF"), id_body)[0] == by_id.format(providerID="DE-GDF")
    assert chosen.outbound(BY_OPERATOR.format(providerID="DE-GDF"), op_body)[0] == by_operator.format(
        providerID="DE-GDF"
    )
    assert chosen.outbound(STATUS.format(providerID="DE-GDF"), full)[0] == STATUS.format(providerID="DE-GDF")


def test_a_variant_path_override_wins_over_status_variants() -> None:
    chosen = profile(status_variants="single_path", paths={"PullEvseStatusById": "/p/{providerID}/by-id"})
    id_body = PullEvseStatusByIdRequest.model_validate({"ProviderID": "DE-GDF", "EvseID": ["DE*GEF*E1"]})
    assert chosen.outbound(STATUS.format(providerID="DE-GDF"), id_body)[0] == "/p/DE-GDF/by-id"


# ---- bodies: field names and date-times ----------------------------------------------------------


def test_field_names_are_renamed_at_any_depth_by_operation_and_for_all() -> None:
    chosen = profile(
        field_names={
            "*": {"EvcoID": "EvcoId"},
            "AuthorizeRemoteReservationStart": {"EMPPartnerSessionID": "EMPPartnerSessionId"},
        }
    )
    _, document = chosen.outbound(RESERVATION_START.format(providerID="DE-GDF"), reservation())
    assert document["EMPPartnerSessionId"] == "emp-4711" and "EMPPartnerSessionID" not in document
    assert document["Identification"] == {"RemoteIdentification": {"EvcoId": "DE-GDF-C12345678-X"}}
    # another operation: only the * renames
    _, other = chosen.outbound(PUSH_STATUS.format(operatorID="DE*GEF"), AssembledBody({"EMPPartnerSessionID": "x"}))
    assert other == {"EMPPartnerSessionID": "x"}


def test_inbound_field_names_are_read_back_to_the_spec() -> None:
    chosen = profile(field_names={"PushEvseStatus": {"EvseStatus": "Status"}})
    sent = {"OperatorEvseStatus": {"EvseStatusRecord": [{"EvseID": "DE*GEF*E1", "Status": "Occupied"}]}}
    back = chosen.inbound_document("PushEvseStatus", sent)
    assert back == {"OperatorEvseStatus": {"EvseStatusRecord": [{"EvseID": "DE*GEF*E1", "EvseStatus": "Occupied"}]}}
    assert chosen.inbound_document("PushEvseData", sent) is sent  # other operations: untouched
    both = {"EvseStatus": "Available", "Status": "Occupied"}  # the spec's name present: it wins
    assert chosen.inbound_document("PushEvseStatus", both) == both


def test_datetime_keys_come_from_the_models() -> None:
    assert {"SessionStart", "ChargingEnd", "EventOccurred", "LastCall", "From", "To", "lastUpdate"} <= (datetime_keys())
    assert "SessionID" not in datetime_keys() and "EvseID" not in datetime_keys()


@pytest.mark.parametrize(
    ("style", "text", "written"),
    [
        ({}, "2026-11-29T10:00:00.250+01:00", "2026-11-29T10:00:00.250+01:00"),
        ({"format": "iso_z"}, "2026-11-29T10:00:00.250+01:00", "2026-11-29T09:00:00Z"),
        ({"format": "iso_millis_z"}, "2026-11-29T10:00:00+01:00", "2026-11-29T09:00:00.000Z"),
        ({"format": "iso_offset"}, "2026-11-29T09:00:00Z", "2026-11-29T09:00:00+00:00"),
        ({"format": "iso_offset", "timezone": "Europe/Berlin"}, "2026-11-29T09:00:00Z", "2026-11-29T10:00:00+01:00"),
        ({"format": "iso_offset", "timezone": "Europe/Berlin"}, "2026-07-01T09:00:00Z", "2026-07-01T11:00:00+02:00"),
        (
            {"format": "iso_millis_offset", "timezone": "America/New_York"},
            "2026-11-29T09:00:00.5Z",
            "2026-11-29T04:00:00.500-05:00",
        ),
        ({"timezone": "UTC"}, "2026-11-29T10:00:00+01:00", "2026-11-29T09:00:00Z"),
        ({"format": "iso_z", "timezone": "UTC"}, "not a date", "not a date"),
        ({"format": "iso_z"}, "2026-11-29T10:00:00", "2026-11-29T10:00:00"),  # no offset: left alone
    ],
)
def test_datetime_styles(style: dict[str, str], text: str, written: str) -> None:
    assert DateTimeStyle.model_validate(style).write(text) == written


def test_datetimes_of_a_body_are_rewritten_and_nothing_else() -> None:
    chosen = profile(datetime={"format": "iso_millis_z"})
    path = OPERATIONS_BY_NAME["GetChargeDetailRecords"].path.format(providerID="DE-GDF")
    _, document = chosen.outbound(path, cdr_request())
    assert document == {
        "ProviderID": "DE-GDF",
        "From": "2026-11-29T09:00:00.250Z",
        "To": "2026-11-29T11:30:00.000Z",
        "CDRForwarded": False,
    }


# ---- the built-in profiles -----------------------------------------------------------------------


def test_strict_changes_nothing_and_copies_nothing() -> None:
    document = {"EvseID": "DE*GEF*E1", "SessionStart": "2026-11-29T10:00:00+01:00"}
    body = AssembledBody(document)
    path = PUSH_STATUS.format(operatorID="DE*GEF")
    sent_path, sent = STRICT.outbound(path, body)
    assert sent_path == path and sent is document
    assert STRICT.batch_limits == {} and STRICT.inbound_paths == {}


def test_hubject_differs_from_strict_where_the_digest_says() -> None:
    assert HUBJECT.status_variants.value == "single_path"  # DIGEST §1.1 rows 13/14, §11.1 item 1
    assert HUBJECT.inbound_paths == {  # DIGEST §2, §11.1 item 3
        "ChargeDetailRecord": ["/api/oicp/cdrmgmt/v21/operators/{operatorID}/charge-detail-record"]
    }
    assert HUBJECT.field_names == {"PushEvseData": {"ChargingStationID": "ChargingStationId"}}  # §11.2 item 10
    assert HUBJECT.paths == {} and HUBJECT.batch_limits == {} and HUBJECT.datetime.unchanged
    assert HUBJECT.id_segment.value == "as_is"
    # the spellings the digest leaves open are not renamed (adoc, examples and release notes disagree)
    _, document = HUBJECT.outbound(RESERVATION_START.format(providerID="DE-GDF"), reservation())
    assert "EMPPartnerSessionID" in document


def test_a_profile_based_on_hubject_keeps_its_keys_and_adds_its_own() -> None:
    resolved = resolve_profiles(
        {
            "hub-qa": profile(
                base="hubject",
                field_names={"PushEvseData": {"HotlinePhoneNumber": "Hotline"}},
                batch_limits={"PushEvseData": 50},
            )
        }
    )
    hub_qa = resolved["hub-qa"]
    assert hub_qa.status_variants.value == "single_path"
    assert hub_qa.field_names["PushEvseData"] == {
        "ChargingStationID": "ChargingStationId",
        "HotlinePhoneNumber": "Hotline",
    }
    assert hub_qa.batch_limits == {"PushEvseData": 50}
    assert BUILTIN_PROFILES["hubject"].batch_limits == {}  # the built-in itself is untouched


# ---- settings ------------------------------------------------------------------------------------


def node_config(peers: list[dict[str, Any]], profiles: dict[str, Any] | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "n",
        "operator_ids": ["DE*GEF"],
        "oicp": {"port": 7001},
        "internal": {"port": 7101, "token": "t"},
        "peers": peers,
    }
    if profiles is not None:
        data["profiles"] = profiles
    return data


EMP_PEER = {"id": "DE-GDF", "role": "emp", "base_url": "http://127.0.0.1:1"}


def load(tmp_path: Path, data: dict[str, Any]) -> Any:
    path = tmp_path / "node.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_settings(path)


def test_peers_get_their_resolved_profile(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        node_config(
            [
                {**EMP_PEER, "profile": "mine"},
                {**EMP_PEER, "id": "DE-HUB", "profile": "hubject"},
                {**EMP_PEER, "id": "DE-STR"},
            ],
            {"mine": {"base": "hubject", "batch_limits": {"PushEvseStatus": 7}}},
        ),
    )
    mine, hub, strict = settings.peers
    assert mine.compat.batch_limits == {"PushEvseStatus": 7} and mine.compat.status_variants.value == "single_path"
    assert hub.compat is BUILTIN_PROFILES["hubject"] and strict.compat is BUILTIN_PROFILES["strict"]
    assert mine.batch_size_for("PushEvseStatus") == 7 and mine.batch_size_for("PushEvseData") == 500
    assert mine.model_copy(update={"enabled": False}).compat is mine.compat  # the registry's switches keep it


def test_a_peer_naming_an_unknown_profile_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, node_config([{**EMP_PEER, "profile": "wwcp"}], {"mine": {}}))
    message = str(caught.value)
    assert "peers.0.profile" in message and "peer DE-GDF names profile 'wwcp'" in message
    assert "known: hubject, mine, strict" in message


def test_a_bad_profile_is_a_config_error_naming_its_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, node_config([EMP_PEER], {"mine": {"batch_limits": {"PushEvseStatus": -1}}}))
    assert "profiles.mine.batch_limits" in str(caught.value)


def test_batch_size_below_the_profile_limit_wins() -> None:
    peer = PeerConfig.model_validate({**EMP_PEER, "batch_size": 3, "profile": "hubject"})
    peer.attach_profile(resolve_profiles({"small": profile(batch_limits={"PushEvseStatus": 10})}))
    assert peer.batch_size_for("PushEvseStatus") == 3


# ---- on the wire: PeerClient.call to a recording peer --------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, Any]]] = []  # (raw path, body)
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((request.raw_path, orjson.loads(await request.read())))
        return web.json_response({"Result": True, "StatusCode": {"Code": "000"}})


@pytest_asyncio.fixture(loop_scope="session")
async def recorder() -> AsyncIterator[Recorder]:
    fake = Recorder()
    app = web.Application()
    app.router.add_post("/{tail:.*}", fake.handle)
    fake.runner = web.AppRunner(app, access_log=None)
    await fake.runner.setup()
    site = web.TCPSite(fake.runner, "127.0.0.1", 0)
    await site.start()
    fake.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield fake
    await fake.runner.cleanup()


def wire_peer(port: int, chosen: CompatibilityProfile, role: str = "cpo", peer_id: str = "DE*WWC") -> PeerConfig:
    peer = PeerConfig.model_validate({"id": peer_id, "role": role, "base_url": f"http://127.0.0.1:{port}"})
    peer.profile = "custom"
    peer.attach_profile({"custom": chosen})
    return peer


@pytest.mark.asyncio(loop_scope="session")
async def test_peer_client_sends_the_profiles_path_id_fields_and_datetimes(recorder: Recorder) -> None:
    chosen = profile(
        paths={"AuthorizeRemoteReservationStart": WWCP_START},
        id_segment="url_encoded",
        field_names={"AuthorizeRemoteReservationStart": {"EMPPartnerSessionID": "EMPPartnerSessionId"}},
        datetime={"format": "iso_millis_z"},
    )
    client = PeerClient.create()
    try:
        peer = wire_peer(recorder.port, chosen)
        await client.call(
            peer, RESERVATION_START.format(providerID="DE*GDF"), reservation(ProviderID="DE*GDF"), Acknowledgement
        )
        path = OPERATIONS_BY_NAME["GetChargeDetailRecords"].path.format(providerID="DE*GDF")
        await client.call(peer, path, cdr_request(ProviderID="DE*GDF"), Acknowledgement, params={"page": 0, "size": 20})
    finally:
        await client.close()
    (start_path, start), (cdr_path, cdr) = recorder.requests
    assert start_path == "/api/oicp/charging/v21/providers/DE%2AGDF/authorize-remote-reservation/start"
    assert start["EMPPartnerSessionId"] == "emp-4711" and "EMPPartnerSessionID" not in start
    assert cdr_path == "/api/oicp/cdrmgmt/v22/providers/DE%2AGDF/get-charge-detail-records-request?page=0&size=20"
    assert cdr["From"] == "2026-11-29T09:00:00.250Z" and cdr["To"] == "2026-11-29T11:30:00.000Z"


@pytest.mark.asyncio(loop_scope="session")
async def test_peer_client_to_the_hub_sends_status_variants_to_the_single_path(recorder: Recorder) -> None:
    client = PeerClient.create()
    try:
        hub = PeerConfig.model_validate(
            {"id": "DE*HUB", "role": "cpo", "base_url": f"http://127.0.0.1:{recorder.port}", "profile": "hubject"}
        )
        body = PullEvseStatusByIdRequest.model_validate({"ProviderID": "DE-GDF", "EvseID": ["DE*HUB*E1"]})
        strict = PeerConfig.model_validate(
            {"id": "DE*STR", "role": "cpo", "base_url": f"http://127.0.0.1:{recorder.port}"}
        )
        for peer in (hub, strict):
            await client.call(peer, BY_ID.format(providerID="DE-GDF"), body, Acknowledgement)
    finally:
        await client.close()
    assert [path for path, _ in recorder.requests] == [
        STATUS.format(providerID="DE-GDF"),
        BY_ID.format(providerID="DE-GDF"),
    ]


def test_a_profile_based_on_a_used_builtin_is_not_an_identity() -> None:
    """The built-in's cached answers (strict: nothing changes) must not leak into a profile built on it."""
    STRICT.outbound(PUSH_STATUS.format(operatorID="DE*GEF"), AssembledBody({}))  # caches strict's answers
    mine = resolve_profiles({"mine": profile(base="strict", id_segment="without_separators")})["mine"]
    path, _ = mine.outbound(PUSH_STATUS.format(operatorID="DE*GEF"), AssembledBody({}))
    assert path == PUSH_STATUS.format(operatorID="DEGEF")
