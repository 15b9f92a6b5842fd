"""Klaviyo payloads as frozen values: the profiles a segment holds and the events we send.

Klaviyo speaks JSON:API. A segment's profiles arrive as resources
``{"type": "profile", "id": ..., "attributes": {...}}`` with the postal address under
``attributes.location``; :meth:`CdpProfile.from_jsonapi` turns one resource into a
:class:`CdpProfile` or raises :class:`MalformedProfile` saying what is wrong with its shape
(a field of the wrong type, an id that cannot identify a recipient). One bad profile never
spoils a page: the client collects the rejects next to the good profiles in a
:class:`ProfilePage`. What the *values* may hold (column sizes, characters, JSON numbers) is
judged once, at sync, by :mod:`mail_pipeline.domain.profiles`.

Messages name the profile id and the field, never a value: they are logged, and a profile's
values are personal data.

:class:`CdpEvent` is the body of ``POST /api/events``. Its ``unique_id`` is the idempotency
key: Klaviyo records only the first event with a given ``unique_id`` for the same profile and
metric, so re-sending an event after a crash or a lost response is harmless.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from mail_pipeline.domain.addresses import Address, has_address
from mail_pipeline.domain.fields import profile_id_problem
from mail_pipeline.domain.profiles import ProfileData

_LOCATION_FIELDS = ("address1", "address2", "city", "region", "zip", "country")


class MalformedProfile(ValueError):
    """A profile resource the pipeline cannot read; ``str()`` says which one and why."""

    def __init__(self, profile_id: str | None, reason: str) -> None:
        self.profile_id = profile_id
        self.reason = reason
        who = f"profile {profile_id}" if profile_id else "a profile without a usable id"
        super().__init__(f"Klaviyo {who} is malformed: {reason}")

    def __reduce__(self) -> tuple[type[MalformedProfile], tuple[str | None, str]]:
        # so a page's rejects survive pickling (Dagster's default IO manager pickles outputs)
        return type(self), (self.profile_id, self.reason)


def _text(value: Any, name: str, profile_id: str) -> str | None:
    """A trimmed string attribute; empty becomes ``None``, an integer (a numeric ZIP) text."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise MalformedProfile(profile_id, f"{name} is a {type(value).__name__}, not text")
    return value.strip() or None


def _timestamp(value: Any, name: str, profile_id: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise MalformedProfile(profile_id, f"{name} is a {type(value).__name__}, not a date")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise MalformedProfile(profile_id, f"{name} is not an ISO-8601 date") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


@dataclass(frozen=True)
class CdpProfile:
    """One member of a CDP segment, as the sync needs it.

    Text fields are trimmed and ``None`` when empty. ``country`` is Klaviyo's free text
    ("United States" as often as "US"); :meth:`to_address` normalizes it.
    """

    profile_id: str
    email: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    phone: str | None = None
    address1: str | None = None
    address2: str | None = None
    city: str | None = None
    region: str | None = None
    zip: str | None = None
    country: str | None = None
    properties: Mapping[str, Any] = field(default_factory=dict)
    #: When the profile entered the segment (``None`` when the response did not say).
    joined_group_at: datetime | None = None

    @classmethod
    def from_jsonapi(cls, resource: Any) -> CdpProfile:
        """Read one JSON:API profile resource; :class:`MalformedProfile` says what is wrong."""
        if not isinstance(resource, dict):
            raise MalformedProfile(
                None, f"the resource is a {type(resource).__name__}, not an object"
            )
        raw_id = resource.get("id")
        profile_id = raw_id.strip() if isinstance(raw_id, str) else ""
        if not profile_id:
            raise MalformedProfile(None, "the resource has no id")
        id_problem = profile_id_problem(profile_id)
        if id_problem is not None:
            # An id no recipient row can hold is not repeated anywhere (not even cut short).
            raise MalformedProfile(None, id_problem)
        if resource.get("type") != "profile":
            raise MalformedProfile(profile_id, "the resource type is not 'profile'")
        attributes = resource.get("attributes")
        if not isinstance(attributes, dict):
            raise MalformedProfile(
                profile_id, f"attributes is {type(attributes).__name__}, not an object"
            )
        location = attributes.get("location") or {}
        if not isinstance(location, dict):
            raise MalformedProfile(
                profile_id, f"location is {type(location).__name__}, not an object"
            )
        properties = attributes.get("properties") or {}
        if not isinstance(properties, dict):
            raise MalformedProfile(
                profile_id, f"properties is {type(properties).__name__}, not an object"
            )
        place = {
            key: _text(location.get(key), f"location.{key}", profile_id) for key in _LOCATION_FIELDS
        }
        return cls(
            profile_id=profile_id,
            email=_text(attributes.get("email"), "email", profile_id),
            first_name=_text(attributes.get("first_name"), "first_name", profile_id),
            last_name=_text(attributes.get("last_name"), "last_name", profile_id),
            phone=_text(attributes.get("phone_number"), "phone_number", profile_id),
            properties=dict(properties),
            joined_group_at=_timestamp(
                attributes.get("joined_group_at"), "joined_group_at", profile_id
            ),
            **place,
        )

    @property
    def full_name(self) -> str | None:
        name = " ".join(part for part in (self.first_name, self.last_name) if part)
        return name or None

    @property
    def has_address(self) -> bool:
        """Whether there is enough of an address to try mailing (else: address enrichment)."""
        return has_address(self.address1, self.city, self.zip)

    def to_data(self) -> ProfileData:
        """The fields the sync judges (:func:`mail_pipeline.domain.profiles.judge_profile`)."""
        return ProfileData(
            profile_id=self.profile_id,
            email=self.email,
            first_name=self.first_name,
            last_name=self.last_name,
            address1=self.address1,
            address2=self.address2,
            city=self.city,
            region=self.region,
            postal_code=self.zip,
            country=self.country,
            properties=self.properties,
        )

    def to_address(self) -> Address:
        """The normalized postal address; raises ``InvalidAddress`` saying what is missing."""
        return Address.build(
            name=self.full_name,
            line1=self.address1,
            line2=self.address2,
            city=self.city,
            region=self.region,
            postal_code=self.zip,
            country=self.country,
        )


@dataclass(frozen=True)
class ProfilePage:
    """One page of a segment: the readable profiles, the rejects, and where the next page is."""

    profiles: tuple[CdpProfile, ...]
    rejected: tuple[MalformedProfile, ...] = ()
    #: ``links.next`` exactly as Klaviyo sent it; ``None`` on the last page.
    next_url: str | None = None


@dataclass(frozen=True)
class CdpEvent:
    """A Klaviyo event (``POST /api/events``), identified by ``unique_id`` for idempotency.

    The profile is named by ``email`` and/or Klaviyo's ``profile_id``; at least one is needed.
    ``time`` must be timezone-aware (Klaviyo wants ISO-8601 with an offset).
    """

    metric_name: str
    unique_id: str
    email: str | None = None
    profile_id: str | None = None
    properties: Mapping[str, Any] = field(default_factory=dict)
    time: datetime | None = None
    value: float | None = None
    value_currency: str | None = None

    def __post_init__(self) -> None:
        if not self.metric_name.strip():
            raise ValueError("a Klaviyo event needs a metric name")
        if not self.unique_id.strip():
            raise ValueError("a Klaviyo event needs a unique_id (its idempotency key)")
        if not (self.email or self.profile_id):
            raise ValueError("a Klaviyo event needs the profile's email or id")
        if self.time is not None and self.time.tzinfo is None:
            raise ValueError("a Klaviyo event time must be timezone-aware")

    def to_jsonapi(self) -> dict[str, Any]:
        """The JSON:API request body Klaviyo documents for ``POST /api/events``."""
        attributes = self._event_attributes()
        attributes["profile"] = {"data": self._profile()}
        return {"data": {"type": "event", "attributes": attributes}}

    def to_bulk_entry(self) -> dict[str, Any]:
        """This event as one entry of ``POST /api/event-bulk-create-jobs``: its profile, and
        the event (the same attributes as :meth:`to_jsonapi`'s, without the profile)."""
        return {
            "type": "event-bulk-create",
            "attributes": {
                "profile": {"data": self._profile()},
                "events": {"data": [{"type": "event", "attributes": self._event_attributes()}]},
            },
        }

    def _profile(self) -> dict[str, Any]:
        profile: dict[str, Any] = {"type": "profile", "attributes": {}}
        if self.profile_id:
            profile["id"] = self.profile_id
        if self.email:
            profile["attributes"]["email"] = self.email
        return profile

    def _event_attributes(self) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            "metric": {"data": {"type": "metric", "attributes": {"name": self.metric_name}}},
            "properties": dict(self.properties),
            "unique_id": self.unique_id,
        }
        if self.time is not None:
            attributes["time"] = self.time.astimezone(UTC).isoformat().replace("+00:00", "Z")
        if self.value is not None:
            attributes["value"] = self.value
        if self.value_currency is not None:
            attributes["value_currency"] = self.value_currency
        return attributes


@dataclass(frozen=True)
class KlaviyoAccount:
    """The account a private key belongs to (``GET /api/accounts``): read to prove the key
    works. ``name`` is the account's organization name, else its id."""

    id: str
    name: str
    test_account: bool = False


@dataclass(frozen=True)
class KlaviyoSegment:
    """A segment as ``GET /api/segments/{id}`` describes it (its members are not read)."""

    id: str
    name: str
