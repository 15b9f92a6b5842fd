"""Faraday's stand-in: uploads, datasets, cohorts, scopes and targets, as the client uses them.

State lives in the shared :class:`SandboxStore` (``faraday.uploads`` by path, and
``faraday.datasets`` / ``cohorts`` / ``scopes`` / ``targets`` by id), so every process of
``dagster dev`` sees the same account. Imitated from the API (the client's module docstring
says what is documented and what is assumed):

- ``Authorization: Bearer <key>``: missing, not Bearer or wrong is **401**; errors are
  ``{"error": <CODE>, "id": <uuid>, "note": ...}``, validation failures (400) add
  ``validationErrors: [{"path", "message", "context": {"errorType"}}]``;
- ``POST /v1/uploads/{directory}/{filename}`` (``application/octet-stream``, UTF-8 CSV; the
  same path again replaces the file) and ``GET /v1/uploads``
  (``[{"subpath", "file_size", "md5_hash", "created_at"}]``);
- ``POST``/``GET`` ``/v1/datasets``, ``/v1/cohorts``, ``/v1/scopes``, ``/v1/targets`` and
  ``GET /v1/<kind>/{id}``: **no idempotency** - every POST makes a new resource (201), except
  that a scope name must be unique (409 ``CONFLICT``), as the API documents;
- a target (``hosted_csv``, ``identified``) goes ``new -> running -> ready``: ``ready`` only
  ``ready_after_seconds`` after its creation (``new`` for the first 5% of that);
  ``GET /v1/targets/{id}/download.csv`` then serves the matched people of its scope's cohorts
  (404 before), one row each: the datasets' ``reference_key_columns`` carried through, then
  ``house_number_and_street``, ``city``, ``state``, ``postcode``;
- matching is deterministic by a hash of the lower-cased email: about ``match_rate`` (70%)
  of people with an email match, everywhere, in every process; people without an email never
  match. A match gets a plausible, valid US address (a real city with one of its ZIP codes,
  a numbered street line);
- 429 (from ``SandboxBehaviour.rate_limit``) carries ``Retry-After``.

Failure modes for tests and demos, by a marker in the **target's name** (the client names it
``address-append <batch name>``, so put the marker in the batch name; case-insensitive):

- ``sandbox-error``: the target ends ``error`` (``status_error`` says why) when it would be
  ready;
- ``sandbox-stuck``: the target never finishes (``running`` for ever).

Not imitated: the rest of the API (outcomes, personas, connections, lookup targets), other
dataset and target types, webhooks, billing.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, ClassVar

import httpx

from mail_pipeline.integrations.sandbox.store import SandboxStore
from mail_pipeline.integrations.sandbox.transport import (
    SandboxBehaviour,
    SandboxTransport,
    atomic,
    json_response,
)

SANDBOX_API_KEY = "sandbox-faraday-key"
#: A target whose name contains this ends ``error``.
ERROR_MARKER = "sandbox-error"
#: A target whose name contains this never finishes.
STUCK_MARKER = "sandbox-stuck"
DEFAULT_READY_AFTER_SECONDS = 120.0
DEFAULT_MATCH_RATE = 0.7
ADDRESS_COLUMNS = ("house_number_and_street", "city", "state", "postcode")
IDENTITY_KEYS = frozenset(
    {
        "address_line_1",
        "address_line_2",
        "city",
        "email",
        "email_hash",
        "freeform_address",
        "house_number_and_street",
        "person_first_name",
        "person_full_name",
        "person_last_name",
        "phone",
        "postcode",
        "state",
    }
)
TRANSFORM_PRESETS = frozenset(
    {
        "default",
        "linkedin",
        "youtube",
        "klaviyo",
        "segment",
        "iterable",
        "poplar",
        "salesforce",
        "hubspot",
        "address_only",
        "liveramp",
    }
)
#: Faraday's error codes by HTTP status.
ERROR_CODES = {
    400: "BAD_REQUEST",
    401: "INVALID_AUTHORIZATION",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "BAD_REQUEST",
    409: "CONFLICT",
    429: "TOO_MANY_REQUESTS",
}
#: Real places and one of their ZIP codes: (city, state, ZIP).
PLACES = (
    ("Sacramento", "CA", "95814"),
    ("Austin", "TX", "78701"),
    ("Denver", "CO", "80202"),
    ("Portland", "OR", "97205"),
    ("Columbus", "OH", "43215"),
    ("Raleigh", "NC", "27601"),
    ("Madison", "WI", "53703"),
    ("Boise", "ID", "83702"),
    ("Albany", "NY", "12207"),
    ("Hartford", "CT", "06103"),
    ("Nashville", "TN", "37203"),
    ("Phoenix", "AZ", "85004"),
    ("Richmond", "VA", "23219"),
    ("Saint Paul", "MN", "55102"),
    ("Burlington", "VT", "05401"),
    ("Springfield", "IL", "62701"),
)
STREETS = ("Maple", "Oak", "Cedar", "Pine", "Elm", "Walnut", "Lincoln", "Park", "Lake", "Hill")
SUFFIXES = ("St", "Ave", "Rd", "Dr", "Ln", "Blvd", "Ct", "Way")
KINDS = ("datasets", "cohorts", "scopes", "targets")


def _digest(email: str) -> int:
    return int.from_bytes(hashlib.sha256(email.strip().lower().encode()).digest()[:8], "big")


def sandbox_matches(email: str | None, match_rate: float = DEFAULT_MATCH_RATE) -> bool:
    """Whether the sandbox finds an address for a person with this email."""
    if not email or not email.strip():
        return False
    return (_digest(email) % 10_000) < match_rate * 10_000


def sandbox_address(email: str) -> dict[str, str]:
    """The address the sandbox appends to a matched email (the export's columns)."""
    digest = _digest(email) // 10_000
    city, state, zip_code = PLACES[digest % len(PLACES)]
    digest //= len(PLACES)
    number = 100 + digest % 9800
    digest //= 9800
    street = f"{STREETS[digest % len(STREETS)]} {SUFFIXES[(digest // 10) % len(SUFFIXES)]}"
    line = f"{number} {street}"
    if (digest // 100) % 5 == 0:
        line += f" Apt {1 + (digest // 500) % 30}"
    return {"house_number_and_street": line, "city": city, "state": state, "postcode": zip_code}


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).isoformat(timespec="microseconds")


class FaradaySandbox(SandboxTransport):
    vendor = "faraday"
    routes: ClassVar[list[tuple[str, str, str]]] = [
        ("GET", r"/v1/uploads", "list_uploads"),
        ("POST", r"/v1/uploads/(?P<directory>[^/]+)/(?P<filename>[^/]+)", "create_upload"),
        ("POST", r"/v1/datasets", "create_dataset"),
        ("GET", r"/v1/datasets", "list_datasets"),
        ("GET", r"/v1/datasets/(?P<resource_id>[^/]+)", "get_dataset"),
        ("POST", r"/v1/cohorts", "create_cohort"),
        ("GET", r"/v1/cohorts", "list_cohorts"),
        ("GET", r"/v1/cohorts/(?P<resource_id>[^/]+)", "get_cohort"),
        ("POST", r"/v1/scopes", "create_scope"),
        ("GET", r"/v1/scopes", "list_scopes"),
        ("GET", r"/v1/scopes/(?P<resource_id>[^/]+)", "get_scope"),
        ("POST", r"/v1/targets", "create_target"),
        ("GET", r"/v1/targets", "list_targets"),
        ("GET", r"/v1/targets/(?P<resource_id>[^/]+)", "get_target"),
        ("GET", r"/v1/targets/(?P<resource_id>[^/]+)/download\.csv", "download_target"),
    ]

    def __init__(
        self,
        store: SandboxStore | None = None,
        behaviour: SandboxBehaviour | None = None,
        *,
        api_key: str = SANDBOX_API_KEY,
        ready_after_seconds: float = DEFAULT_READY_AFTER_SECONDS,
        match_rate: float = DEFAULT_MATCH_RATE,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``clock`` is the wall clock targets age by (tests move it, or pass
        ``ready_after_seconds=0``)."""
        if ready_after_seconds < 0:
            raise ValueError("ready_after_seconds must not be negative")
        if not 0 <= match_rate <= 1:
            raise ValueError("match_rate must be between 0 and 1")
        super().__init__(store, behaviour, sleep=sleep, clock=clock)
        self.api_key = api_key
        self.ready_after_seconds = ready_after_seconds
        self.match_rate = match_rate

    # -- what tests and operators ask ---------------------------------------------------
    def count(self, kind: str) -> int:
        """How many resources of ``kind`` (``uploads``, ``datasets``, ...) exist."""
        return self.store.count(f"faraday.{kind}")

    def resources(self, kind: str) -> list[dict[str, Any]]:
        """The resources of ``kind`` as the API lists them, oldest first."""
        if kind == "uploads":
            return [_upload_view(doc) for doc in self._scan("uploads")]
        return [self._render(kind, doc) for doc in self._scan(kind)]

    # -- the vendor's answers -----------------------------------------------------------
    def error(self, status: int, message: str, code: str | None = None) -> httpx.Response:
        if code is None or not code.isupper():
            code = ERROR_CODES.get(status, "INTERNAL_SERVER_ERROR" if status >= 500 else None)
        body = {"error": code or "BAD_REQUEST", "id": str(uuid.uuid4()), "note": message}
        return json_response(status, body)

    def invalid(self, path: str, message: str, kind: str = "required") -> httpx.Response:
        body = {
            "error": "VALIDATION_FAILED",
            "id": str(uuid.uuid4()),
            "note": "The request failed validation.",
            "validationErrors": [
                {"path": path, "message": message, "context": {"errorType": kind}}
            ],
        }
        return json_response(400, body)

    def rate_limited(self, retry_after: float) -> httpx.Response:
        response = self.error(429, "Too many requests; retry later.")
        response.headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
        return response

    def authenticate(self, request: httpx.Request) -> httpx.Response | None:
        value = request.headers.get("authorization")
        if not value:
            return self.error(401, "No API key was provided.", "MISSING_API_KEY")
        scheme, _, key = value.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            return self.error(401, "Use Authorization: Bearer <API key>.", "MALFORMED_API_KEY")
        if key.strip() != self.api_key:
            return self.error(401, "The API key is not valid.", "INVALID_AUTHORIZATION")
        return None

    # -- uploads ------------------------------------------------------------------------
    @atomic
    def create_upload(
        self, request: httpx.Request, directory: str, filename: str
    ) -> httpx.Response:
        if request.headers.get("content-type", "").split(";")[0] != "application/octet-stream":
            return self.error(400, "Uploads must be sent as application/octet-stream.")
        content = request.read()
        if not content:
            return self.error(400, "The uploaded file is empty.")
        try:
            text = content.decode("utf-8-sig")
        except UnicodeDecodeError:
            return self.error(400, "The uploaded file is not UTF-8 text.")
        now = self.clock()
        subpath = f"{directory}/{filename}"
        self.store.put(
            "faraday.uploads",
            subpath,
            {
                "subpath": subpath,
                "directory": directory,
                "file_size": len(content),
                "md5_hash": hashlib.md5(content, usedforsecurity=False).hexdigest(),
                "created": now,
                "text": text,
            },
        )
        return httpx.Response(200)

    def list_uploads(self, request: httpx.Request) -> httpx.Response:
        return json_response(200, self.resources("uploads"))

    # -- datasets, cohorts, scopes ------------------------------------------------------
    @atomic
    def create_dataset(self, request: httpx.Request) -> httpx.Response:
        body, problem = self._body(request)
        if problem is not None:
            return problem
        options = body.get("options")
        if not isinstance(options, dict) or options.get("type") != "hosted_csv":
            return self.invalid("/options/type", "the sandbox has hosted_csv datasets only")
        if not isinstance(options.get("upload_directory"), str) or not options["upload_directory"]:
            return self.invalid("/options/upload_directory", "upload_directory is required")
        sets = body.get("identity_sets")
        if not isinstance(sets, dict) or not sets:
            return self.invalid("/identity_sets", "identity_sets is required")
        for set_name, fields in sets.items():
            if not isinstance(fields, dict) or not fields:
                return self.invalid(f"/identity_sets/{set_name}", "must be a non-empty object")
            for key, column in fields.items():
                if key not in IDENTITY_KEYS:
                    return self.invalid(
                        f"/identity_sets/{set_name}/{key}", "is no identity field", "additional"
                    )
                wanted: type = list if key == "house_number_and_street" else str
                if not isinstance(column, wanted):
                    return self.invalid(
                        f"/identity_sets/{set_name}/{key}", "has the wrong type", "type"
                    )
        for field in ("reference_key_columns", "upsert_columns"):
            value = body.get(field, [])
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                return self.invalid(f"/{field}", "must be an array of column names", "type")
        streams = body.get("output_to_streams", {})
        if not isinstance(streams, dict) or not all(
            isinstance(v, dict) and isinstance(v.get("data_map"), dict) for v in streams.values()
        ):
            return self.invalid("/output_to_streams", "each stream needs a data_map", "type")
        return self._create("datasets", body)

    @atomic
    def create_cohort(self, request: httpx.Request) -> httpx.Response:
        body, problem = self._body(request)
        if problem is not None:
            return problem
        stream = body.get("stream_name")
        if not isinstance(stream, str) or not stream:
            return self.invalid("/stream_name", "the sandbox builds cohorts from a stream only")
        if not any(stream in doc.get("output_to_streams", {}) for doc in self._scan("datasets")):
            return self.invalid("/stream_name", f"there is no stream named {stream}", "enum")
        return self._create("cohorts", body)

    @atomic
    def create_scope(self, request: httpx.Request) -> httpx.Response:
        body, problem = self._body(request)
        if problem is not None:
            return problem
        if not isinstance(body.get("preview"), bool):
            return self.invalid("/preview", "preview is required")
        if not isinstance(body.get("payload"), dict):
            return self.invalid("/payload", "payload is required")
        population = body.get("population")
        cohorts = population.get("cohort_ids") if isinstance(population, dict) else None
        if not isinstance(cohorts, list) or not all(isinstance(c, str) for c in cohorts):
            return self.invalid("/population/cohort_ids", "cohort_ids is required")
        for cohort_id in cohorts:
            if self.store.get("faraday.cohorts", cohort_id) is None:
                return self.error(404, f"Cohort {cohort_id} not found.")
        if any(doc["name"] == body["name"] for doc in self._scan("scopes")):
            return self.error(409, f"A scope named {body['name']!r} already exists.")
        return self._create("scopes", body)

    # -- targets ------------------------------------------------------------------------
    @atomic
    def create_target(self, request: httpx.Request) -> httpx.Response:
        body, problem = self._body(request)
        if problem is not None:
            return problem
        options = body.get("options")
        if not isinstance(options, dict) or options.get("type") != "hosted_csv":
            return self.invalid("/options/type", "the sandbox has hosted_csv targets only")
        mode = body.get("representation")
        if not isinstance(mode, dict) or mode.get("mode") != "identified":
            return self.invalid("/representation/mode", "the sandbox has identified targets only")
        if mode.get("aggregate") not in ("person", "residence"):
            return self.invalid("/representation/aggregate", "must be person or residence", "enum")
        if mode.get("transform_preset", "default") not in TRANSFORM_PRESETS:
            return self.invalid("/representation/transform_preset", "unknown preset", "enum")
        scope_id = body.get("scope_id")
        if not isinstance(scope_id, str) or not scope_id:
            return self.invalid("/scope_id", "scope_id is required")
        if self.store.get("faraday.scopes", scope_id) is None:
            return self.error(404, f"Scope {scope_id} not found.")
        return self._create("targets", body)

    def get_target(self, request: httpx.Request, resource_id: str) -> httpx.Response:
        doc = self.store.get("faraday.targets", resource_id)
        if doc is None:
            return self.error(404, f"Target {resource_id} not found.")
        shown = self._render("targets", doc)
        if shown["status"] == "ready":
            shown["count"] = len(self._export(doc)[1])  # "only included if the target is built"
        return json_response(200, shown)

    def download_target(self, request: httpx.Request, resource_id: str) -> httpx.Response:
        doc = self.store.get("faraday.targets", resource_id)
        if doc is None:
            return self.error(404, f"Target {resource_id} not found.")
        if self._status("targets", doc)[0] != "ready":
            return self.error(404, f"Target {resource_id} has no output yet.")
        header, rows = self._export(doc)
        out = io.StringIO(newline="")
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(header)
        writer.writerows(rows)
        return httpx.Response(
            200, content=out.getvalue().encode(), headers={"content-type": "text/csv"}
        )

    # -- the generic resource routes ----------------------------------------------------
    def list_datasets(self, request: httpx.Request) -> httpx.Response:
        return json_response(200, self.resources("datasets"))

    def list_cohorts(self, request: httpx.Request) -> httpx.Response:
        return json_response(200, self.resources("cohorts"))

    def list_scopes(self, request: httpx.Request) -> httpx.Response:
        return json_response(200, self.resources("scopes"))

    def list_targets(self, request: httpx.Request) -> httpx.Response:
        return json_response(200, self.resources("targets"))

    def get_dataset(self, request: httpx.Request, resource_id: str) -> httpx.Response:
        return self._get("datasets", resource_id)

    def get_cohort(self, request: httpx.Request, resource_id: str) -> httpx.Response:
        return self._get("cohorts", resource_id)

    def get_scope(self, request: httpx.Request, resource_id: str) -> httpx.Response:
        return self._get("scopes", resource_id)

    def _get(self, kind: str, resource_id: str) -> httpx.Response:
        doc = self.store.get(f"faraday.{kind}", resource_id)
        if doc is None:
            return self.error(404, f"{kind[:-1].capitalize()} {resource_id} not found.")
        return json_response(200, self._render(kind, doc))

    def _body(self, request: httpx.Request) -> tuple[dict[str, Any], httpx.Response | None]:
        try:
            body = httpx.Response(200, content=request.read()).json()
        except ValueError:
            return {}, self.error(400, "The request body is not valid JSON.")
        if not isinstance(body, dict):
            return {}, self.error(400, "The request body must be a JSON object.")
        if not isinstance(body.get("name"), str) or not body["name"].strip():
            return {}, self.invalid("/name", "name is required")
        return body, None

    def _create(self, kind: str, body: dict[str, Any]) -> httpx.Response:
        resource_id = str(uuid.uuid4())
        doc = {**body, "id": resource_id, "created": self.clock()}
        self.store.put(f"faraday.{kind}", resource_id, doc)
        return json_response(201, self._render(kind, doc))

    def _scan(self, kind: str) -> Iterator[dict[str, Any]]:
        after = 0
        while True:
            rows = self.store.scan(f"faraday.{kind}", after_seq=after, limit=500)
            if not rows:
                return
            for seq, _key, doc in rows:
                after = seq
                yield doc

    # -- time and output ----------------------------------------------------------------
    def _status(self, kind: str, doc: dict[str, Any]) -> tuple[str, float]:
        """``(status, since)`` at the sandbox's clock."""
        created = float(doc["created"])
        ready_at = created + self.ready_after_seconds
        running_at = created + self.ready_after_seconds * 0.05
        now = self.clock()
        name = str(doc.get("name", "")).lower()
        if kind == "targets" and STUCK_MARKER in name:
            return ("running", running_at) if now >= running_at else ("new", created)
        if now >= ready_at:
            if kind == "targets" and ERROR_MARKER in name:
                return "error", ready_at
            return "ready", ready_at
        if now >= running_at:
            return "running", running_at
        return "new", created

    def _render(self, kind: str, doc: dict[str, Any]) -> dict[str, Any]:
        status, since = self._status(kind, doc)
        shown = {key: value for key, value in doc.items() if key != "created"}
        shown.update(
            {
                "created_at": _iso(doc["created"]),
                "updated_at": _iso(doc["created"]),
                "status": status,
                "status_changed_at": _iso(since),
                "resource_type": kind,
            }
        )
        if status == "ready":
            shown["last_updated_output_at"] = _iso(since)
        if status == "error":
            shown["status_error"] = (
                f"sandbox: the target failed to build ({ERROR_MARKER!r} is in its name)"
            )
        return shown

    def _export(self, target: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
        """The header and rows of a target's CSV: its scope's matched people."""
        scope = self.store.get("faraday.scopes", target["scope_id"]) or {}
        streams = set()
        for cohort_id in scope.get("population", {}).get("cohort_ids", []):
            cohort = self.store.get("faraday.cohorts", cohort_id)
            if cohort is not None:
                streams.add(cohort["stream_name"])
        datasets = [
            doc for doc in self._scan("datasets") if streams & set(doc.get("output_to_streams", {}))
        ]
        keys: list[str] = []
        for dataset in datasets:
            keys += [k for k in dataset.get("reference_key_columns", []) if k not in keys]
        rows: dict[str, list[str]] = {}
        for dataset in datasets:
            for person in self._people(dataset):
                email = _email(dataset, person)
                if not sandbox_matches(email, self.match_rate):
                    continue
                assert email is not None
                address = sandbox_address(email)
                identity = email.strip().lower()
                rows.setdefault(
                    identity,
                    [person.get(k, "") for k in keys] + [address[c] for c in ADDRESS_COLUMNS],
                )
        return keys + list(ADDRESS_COLUMNS), list(rows.values())

    def _people(self, dataset: dict[str, Any]) -> list[dict[str, str]]:
        """The dataset's rows: every file of its directory, oldest first, upserted by its
        ``upsert_columns``."""
        directory = dataset["options"]["upload_directory"]
        upsert = dataset.get("upsert_columns") or []
        people: dict[Any, dict[str, str]] = {}
        for upload in self._scan("uploads"):
            if upload["directory"] != directory:
                continue
            try:
                for row in csv.DictReader(io.StringIO(upload["text"], newline="")):
                    clean = {k: v or "" for k, v in row.items() if isinstance(k, str)}
                    key = tuple(clean.get(c, "") for c in upsert) if upsert else len(people)
                    people[key] = clean
            except csv.Error:
                continue  # Faraday skips a file it cannot read; so does the sandbox
        return list(people.values())


def _email(dataset: dict[str, Any], person: dict[str, str]) -> str | None:
    for fields in dataset["identity_sets"].values():
        column = fields.get("email")
        if isinstance(column, str) and person.get(column, "").strip():
            return person[column]
    return None


def _upload_view(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        "subpath": doc["subpath"],
        "file_size": doc["file_size"],
        "md5_hash": doc["md5_hash"],
        "created_at": _iso(doc["created"]),
    }
