"""What the Klaviyo sandbox knows: seeded segments and the events it accepted.

Everything lives in the shared :class:`SandboxStore`, so a seeding command, the Dagster
processes and the tests all see one Klaviyo account. :class:`KlaviyoSandboxData` is the
operator's view of it (seed a segment, list recorded events); :func:`profile_resource` builds
the JSON:API profile Klaviyo would serve from plain fields, and :func:`demo_profiles` makes a
deterministic demo segment.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from mail_pipeline.integrations.sandbox.store import SandboxStore

#: ``segment_id -> {"segment_id", "size"}``
SEGMENTS = "klaviyo.segments"
#: lower-cased email -> ``{"profile_id"}``, so events named by email find their profile.
PROFILE_EMAILS = "klaviyo.profile_emails"
#: dedupe key -> the recorded event
EVENTS = "klaviyo.events"
#: profile id -> ``{"resource"}``: every seeded profile, for ``GET /api/profiles``.
PROFILES = "klaviyo.profiles"


def segment_collection(segment_id: str) -> str:
    """The collection holding a segment's members, in segment order."""
    return f"klaviyo.segment.{segment_id}"


def profile_resource(
    profile_id: str,
    email: str | None,
    first_name: str | None = None,
    last_name: str | None = None,
    location: Mapping[str, Any] | None = None,
    properties: Mapping[str, Any] | None = None,
    *,
    phone_number: str | None = None,
    joined_group_at: datetime | None = None,
) -> dict[str, Any]:
    """A profile as Klaviyo's segment-profiles endpoint returns it (JSON:API resource)."""
    place = {
        "address1": None,
        "address2": None,
        "city": None,
        "region": None,
        "zip": None,
        "country": None,
        "timezone": None,
        "latitude": None,
        "longitude": None,
        "ip": None,
    }
    place.update(location or {})
    joined = joined_group_at or datetime(2026, 1, 1, tzinfo=UTC)
    return {
        "type": "profile",
        "id": profile_id,
        "attributes": {
            "email": email,
            "phone_number": phone_number,
            "external_id": None,
            "first_name": first_name,
            "last_name": last_name,
            "location": place,
            "properties": dict(properties or {}),
            "joined_group_at": joined.astimezone(UTC).isoformat(timespec="seconds"),
        },
        "links": {"self": f"https://a.klaviyo.com/api/profiles/{profile_id}/"},
    }


class KlaviyoSandboxData:
    """Seed and inspect the sandbox Klaviyo account."""

    def __init__(self, store: SandboxStore) -> None:
        self.store = store

    def put_segment_profiles(self, segment_id: str, profiles: Sequence[Any]) -> int:
        """Make ``profiles`` (JSON:API resources, served verbatim, malformed ones included)
        the whole membership of ``segment_id``, in this order. Re-seeding replaces it."""
        collection = segment_collection(segment_id)
        self.store.clear(collection)
        for position, resource in enumerate(profiles):
            self.store.put(collection, f"{position:09d}", {"resource": resource})
            if isinstance(resource, dict):
                attributes = resource.get("attributes")
                email = attributes.get("email") if isinstance(attributes, dict) else None
                if isinstance(email, str) and isinstance(resource.get("id"), str):
                    self.store.put(
                        PROFILE_EMAILS, email.strip().lower(), {"profile_id": resource["id"]}
                    )
                if isinstance(resource.get("id"), str):
                    self.store.put(PROFILES, resource["id"], {"resource": resource})
        self.store.put(SEGMENTS, segment_id, {"segment_id": segment_id, "size": len(profiles)})
        return len(profiles)

    def put_profile(self, resource: dict[str, Any]) -> None:
        """Add or replace one profile (served by ``GET /api/profiles``), in no segment."""
        self.store.put(PROFILES, str(resource["id"]), {"resource": resource})

    def segment_ids(self) -> list[str]:
        return [key for _seq, key, _doc in _scan_all(self.store, SEGMENTS)]

    def segment_size(self, segment_id: str) -> int | None:
        doc = self.store.get(SEGMENTS, segment_id)
        return None if doc is None else int(doc["size"])

    def events(self, metric: str | None = None) -> list[dict[str, Any]]:
        """Recorded events, oldest first (one per dedupe key: repeats are not listed)."""
        return [
            doc
            for _seq, _key, doc in _scan_all(self.store, EVENTS)
            if metric is None or doc["metric"] == metric
        ]


def _scan_all(store: SandboxStore, collection: str) -> Iterator[tuple[int, str, dict[str, Any]]]:
    after = 0
    while True:
        rows = store.scan(collection, after_seq=after, limit=500)
        yield from rows
        if len(rows) < 500:
            return
        after = rows[-1][0]


_FIRST = [
    "Ava",
    "Ben",
    "Chloe",
    "Dan",
    "Emma",
    "Finn",
    "Grace",
    "Hugo",
    "Isla",
    "Jack",
    "Lena",
    "Marco",
    "Nora",
    "Owen",
    "Priya",
    "Quinn",
    "Rosa",
    "Sam",
    "Tara",
    "Yusuf",
]
_LAST = [
    "Adams",
    "Baker",
    "Chen",
    "Diaz",
    "Evans",
    "Fischer",
    "Garcia",
    "Hughes",
    "Ito",
    "Jones",
    "Khan",
    "Lopez",
    "Miller",
    "Nguyen",
    "Okafor",
    "Patel",
    "Reyes",
    "Smith",
]
_US_PLACES = [
    ("New York", "NY", "10017"),
    ("Brooklyn", "NY", "11201"),
    ("Austin", "TX", "78701"),
    ("Denver", "CO", "80202"),
    ("Seattle", "WA", "98101"),
    ("Chicago", "IL", "60601"),
    ("Portland", "OR", "97205"),
    ("Boston", "MA", "02108"),
]
_GB_PLACES = [
    ("London", None, "SW1A 1AA"),
    ("Manchester", None, "M1 1AE"),
    ("Bristol", None, "BS1 4DJ"),
    ("Leeds", None, "LS1 1UR"),
]
_STREETS = ["Main Street", "Oak Avenue", "High Street", "Park Road", "Elm Drive", "Mill Lane"]
#: Klaviyo's country field is free text: the demo mixes spellings on purpose.
_COUNTRY_SPELLINGS = {"US": ["United States", "US", "USA"], "GB": ["United Kingdom", "UK", "GB"]}


def demo_profiles(
    count: int,
    *,
    seed: int = 0,
    country: str = "US",
    without_address_every: int = 0,
    id_prefix: str = "01DEMO",
) -> list[dict[str, Any]]:
    """``count`` deterministic, realistic profile resources for a demo segment.

    Every ``without_address_every``-th profile has an email but no address (it enters the
    pipeline as AddressEnrichable); 0 gives everyone an address. Every profile has a
    ``favorite_product``; two in three a ``loyalty_tier`` and every other one a
    ``last_product``, so designs using them meet both present and missing properties.
    """
    rng = random.Random(seed)
    places = _GB_PLACES if country == "GB" else _US_PLACES
    start = datetime(2026, 1, 1, tzinfo=UTC)
    resources = []
    for n in range(count):
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        profile_id = f"{id_prefix}{seed:04d}{n:016d}"[:26].ljust(26, "0")
        location: dict[str, Any] | None = None
        if not (without_address_every and (n + 1) % without_address_every == 0):
            city, region, postal = rng.choice(places)
            location = {
                "address1": f"{rng.randint(1, 999)} {rng.choice(_STREETS)}",
                "address2": f"Apt {rng.randint(1, 40)}" if rng.random() < 0.2 else None,
                "city": city,
                "region": region,
                "zip": postal,
                "country": rng.choice(_COUNTRY_SPELLINGS[country]),
            }
        resources.append(
            profile_resource(
                profile_id,
                f"{first}.{last}.{seed}.{n}@example.com".lower(),
                first,
                last,
                location,
                {
                    "favorite_product": rng.choice(["tea", "coffee", "cocoa"]),
                    **_profile_extras(n),
                },
                joined_group_at=start + timedelta(minutes=n),
            )
        )
    return resources


_TIERS = ["gold", "silver", "bronze"]
_PRODUCTS = ["Earl Grey Tin", "Espresso Beans", "Cocoa Gift Box", "Matcha Kit"]


def _profile_extras(n: int) -> dict[str, str]:
    """Properties some demo profiles have and others lack (derived from the position, not
    the random generator, so the rest of a seeded segment does not change)."""
    extras = {}
    if n % 3 != 2:
        extras["loyalty_tier"] = _TIERS[n % len(_TIERS)]
    if n % 2 == 0:
        extras["last_product"] = _PRODUCTS[(n // 2) % len(_PRODUCTS)]
    return extras
