"""Property: whatever a CDP sends, the sync refuses it with a typed error or writes a recipient
row that the database (SQLite, and PostgreSQL with MAIL_PIPELINE_TEST_DATABASE_URL) stores
exactly as it was built.

A profile goes through the sync's own path: ``CdpProfile.from_jsonapi`` (``MalformedProfile``
for a wrong shape), ``judge_profile`` (the field checks, the address rules), the sync's
``recipient_row`` and ``CampaignGateway.add_recipients``; the row is read back and compared
column by column. JSON numbers compare by value: ``jsonb`` keeps a number's decimal digits, so
``1e300`` may come back as the equal integer.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from mail_pipeline.db.campaigns import CampaignForSync, CampaignGateway
from mail_pipeline.db.engine import unit_of_work
from mail_pipeline.db.models import Recipient
from mail_pipeline.domain.addresses import (
    US_MAILABLE_STATES,
    Address,
    InvalidAddress,
    normalize_gb_postcode,
)
from mail_pipeline.domain.fields import NAME_MAX, InvalidField, check_text
from mail_pipeline.domain.profiles import Destination, judge_profile
from mail_pipeline.domain.recipients import RecipientStatus
from mail_pipeline.domain.sync import Decision
from mail_pipeline.integrations.klaviyo.models import CdpProfile, MalformedProfile
from mail_pipeline.services.sync import recipient_row

S = RecipientStatus
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
DB_PROPERTY = settings(
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    max_examples=80,
    deadline=None,
)

# -- what a CDP may send --------------------------------------------------------------------

_AWKWARD = st.sampled_from(["\x00", "\ud800", "\x07", "\t", "\n", " ", "\u0130", "é", "ß", "~"])
_TEXT = st.one_of(
    st.text(max_size=24),
    st.text(alphabet=st.one_of(_AWKWARD, st.characters(max_codepoint=0x7F)), max_size=12),
    st.text(alphabet="ab ", min_size=95, max_size=260),
)
_MAYBE = st.one_of(st.none(), _TEXT)
_COUNTRIES = st.sampled_from(
    [
        "US",
        "USA",
        "U.S.A",
        "United States.",
        "The United States",
        "UK",
        "England",
        "GB",
        "France",
        "ZZ",
        "Atlantis",
        "Puerto Rico",
        "",
        None,
    ]
)
_REGIONS = st.sampled_from(["NY", "ca", "California", "N.Y.", "UM", "AE", "Calif", "", None])
_ZIPS = st.sampled_from(
    ["10017", "10017-1234", "10017 1234", "2108", "1001", "SW1A 1AA", "sw1a1aa", "M1 1AE", "ABC"]
)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | _TEXT,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.one_of(st.text(max_size=5), _AWKWARD), children, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def profile_resources(draw: st.DrawFn) -> Any:
    """JSON:API profile resources: mostly well-formed, with awkward values anywhere."""
    location = {
        "address1": draw(st.one_of(st.sampled_from(["1 Main St", "12 High Street"]), _MAYBE)),
        "address2": draw(_MAYBE),
        "city": draw(st.one_of(st.just("Springfield"), _MAYBE)),
        "region": draw(st.one_of(_REGIONS, _MAYBE)),
        "zip": draw(st.one_of(_ZIPS, _MAYBE, st.integers(0, 99999))),
        "country": draw(st.one_of(_COUNTRIES, _MAYBE)),
    }
    attributes = {
        "email": draw(st.one_of(st.just("ann@example.com"), _MAYBE)),
        "first_name": draw(st.one_of(st.just("Ann"), _MAYBE)),
        "last_name": draw(_MAYBE),
        "phone_number": draw(_MAYBE),
        "location": location,
        "properties": draw(st.dictionaries(st.text(max_size=6), _JSON, max_size=4)),
    }
    if draw(st.booleans()):  # numbers JSON has no spelling for, strings it refuses
        attributes["properties"]["score"] = draw(st.floats())
    if draw(st.booleans()):
        attributes["properties"]["note"] = draw(_TEXT)
    if draw(st.integers(0, 9)) == 0:  # now and then a field of the wrong type
        attributes[draw(st.sampled_from(["email", "first_name"]))] = draw(_JSON)
    profile_id = draw(
        st.one_of(st.from_regex(r"01[A-Z0-9]{8}", fullmatch=True), st.text(max_size=140))
    )
    return {"type": "profile", "id": profile_id, "attributes": attributes}


# -- comparing what was written with what is read -------------------------------------------


def same(written: Any, read: Any) -> bool:
    """Equal, with JSON numbers compared by value (``jsonb`` stores decimal digits)."""
    if isinstance(written, bool) or isinstance(read, bool):
        return type(written) is type(read) and written == read
    if isinstance(written, int | float) and isinstance(read, int | float):
        return float(written) == float(read) if math.isfinite(float(written)) else False
    if isinstance(written, dict) and isinstance(read, dict):
        return written.keys() == read.keys() and all(same(written[k], read[k]) for k in written)
    if isinstance(written, list) and isinstance(read, list):
        return len(written) == len(read) and all(map(same, written, read))
    return bool(written == read)


@pytest.fixture
def campaign(db_url: str, make_campaign: Any) -> CampaignForSync:
    _, campaign_id = make_campaign()
    with unit_of_work(db_url) as session:
        found = CampaignGateway(session).campaign_for_sync(campaign_id)
    assert found is not None
    return found


def _store_and_read_back(db_url: str, row: dict[str, Any]) -> None:
    with unit_of_work(db_url) as session:
        CampaignGateway(session).add_recipients([row])
    with unit_of_work(db_url) as session:
        stored = session.scalars(
            select(Recipient).where(
                Recipient.campaign_id == row["campaign_id"],
                Recipient.external_profile_id == row["external_profile_id"],
            )
        ).one()
        for column, value in row.items():
            assert same(value, getattr(stored, column)), column
        session.delete(stored)


# -- the properties -------------------------------------------------------------------------


@DB_PROPERTY
@given(resource=profile_resources())
def test_a_cdp_profile_is_refused_typed_or_stored_as_it_is(
    db_url: str, campaign: CampaignForSync, resource: Any
) -> None:
    try:
        profile = CdpProfile.from_jsonapi(resource)
    except MalformedProfile as exc:
        # the message names the field, never a value it carried
        for value in resource["attributes"].values():
            if isinstance(value, str) and len(value) > 3:
                assert value not in exc.reason
        return
    judged = judge_profile(profile.to_data(), Destination(home_country="US"))
    decision = Decision(S.ERROR, judged.problem) if judged.problem else Decision(S.PENDING)
    row = recipient_row(campaign, profile.profile_id, decision, judged.values, NOW)

    _store_and_read_back(db_url, row)

    if judged.problem is None and judged.has_address:
        # judged mailable: the address is in its country's normal form
        assert judged.values["country"] in ("US", "GB")
        if judged.values["country"] == "US":
            assert judged.values["region"] in US_MAILABLE_STATES
            assert re.fullmatch(r"[0-9]{5}(-[0-9]{4})?", judged.values["postal_code"])
        else:
            postcode = judged.values["postal_code"]
            assert normalize_gb_postcode(postcode) == postcode


@DB_PROPERTY
@given(value=_TEXT)
def test_text_is_refused_typed_or_stored_as_it_is(
    db_url: str, campaign: CampaignForSync, value: str
) -> None:
    try:
        checked = check_text("first name", value, NAME_MAX)
    except InvalidField as exc:
        assert exc.field == "first name"
        return
    row = recipient_row(
        campaign, "P-TEXT", Decision(S.PENDING), {"first_name": checked, "properties": {}}, NOW
    )
    _store_and_read_back(db_url, row)


@given(
    line1=st.one_of(st.just("1 Main St"), _MAYBE),
    city=st.one_of(st.just("Austin"), _MAYBE),
    region=st.one_of(_REGIONS, _MAYBE),
    postal_code=st.one_of(_ZIPS, _MAYBE),
    country=st.one_of(_COUNTRIES, _MAYBE),
    home_country=st.sampled_from(["US", "GB", None]),
)
def test_an_address_is_refused_typed_or_in_a_stable_normal_form(
    line1: str | None,
    city: str | None,
    region: str | None,
    postal_code: str | None,
    country: str | None,
    home_country: str | None,
) -> None:
    try:
        address = Address.build(
            name="Ann Lee",
            line1=line1,
            city=city,
            region=region,
            postal_code=postal_code,
            country=country,
            home_country=home_country,
        )
    except InvalidAddress as exc:
        for value in (line1, city, postal_code):
            if value and len(value) > 3 and value not in str(InvalidAddress.__doc__):
                assert value not in str(exc)
        return
    again = Address.build(
        name=address.name,
        line1=address.line1,
        line2=address.line2,
        city=address.city,
        region=address.region,
        postal_code=address.postal_code,
        country=address.country,
    )
    assert again == address
    assert len(address.country) == 2 and address.country.isupper()
