"""Faraday address append (integrations.md §4) over raw httpx.

One batch is Faraday's documented resource chain, each resource named after the batch:

1. ``POST /uploads/{directory}/{filename}`` - our CSV (``application/octet-stream``), columns
   ``reference,email,first_name,last_name,postcode``;
2. ``POST /datasets`` - ``hosted_csv`` over that directory, one identity set mapping our
   columns (``email``, ``person_first_name``, ``person_last_name``, ``postcode``),
   ``reference_key_columns: ["reference"]`` and a stream for the cohort;
3. ``POST /cohorts`` - the people of that stream;
4. ``POST /scopes`` - that cohort as population, ``preview: false`` (billed, every row);
5. ``POST /targets`` - ``hosted_csv``, representation ``identified`` / ``aggregate: person``,
   ``transform_preset: address_only``. Its id is the batch id;
6. ``GET /targets/{id}`` until ``status`` is ``ready`` (or ``error``, with ``status_error``),
   then ``GET /targets/{id}/download.csv``.

**Idempotent by batch name.** No Faraday POST is idempotent: a repeated create makes a
second dataset, scope or (billed) target. So :meth:`FaradayEnricher.submit` first looks for
the batch's target by name (``GET /targets``) and, if it exists, returns it; otherwise it
walks the chain and, for each step, looks the resource up by name in the list endpoint
(``GET /uploads`` by path, ``GET /datasets``, ``GET /cohorts``, ``GET /scopes``) and creates
it only when absent. Creates are sent exactly once, without transport retries; after a failed
or unanswered create the lookup runs again before the next try, so a create whose answer was
lost is found instead of repeated (the shape of the IntelliPrint client). An upload already
at the batch's path with different content means the name was reused for other people:
:class:`BatchMismatch`, nothing created. Two processes submitting one batch at the same
instant are not covered; the caller claims a batch for one run.

What is documented [V] (the generated ``faraday-js`` client and its OpenAPI models, 2026-08):
the routes above and ``GET /uploads``, ``/datasets``, ``/cohorts``, ``/scopes``,
``/targets`` answering JSON arrays; Bearer auth; the request fields used here; target
``status`` in ``new | starting | running | ready | error`` with ``status_error``; the
download as text; error bodies ``{"error": <CODE>, "id", "note", "validationErrors"?}``;
"each scope must have a unique name".

What this client assumes [U] - confirm with Faraday, then change the constants below:

- the export carries the dataset's ``reference_key_columns`` through, so each row has our
  ``reference`` column (the documented way to key an export on our ids is the ``referenced``
  representation; ``identified`` is what the docs call suitable for direct mail);
- the ``address_only`` export's columns are ``house_number_and_street``, ``city``,
  ``state`` and ``postcode`` (the Lookup API's field names), optionally ``address_line_2``;
  only matched people have a row (a row without any address counts as unmatched); addresses
  are US (FIG covers the US population);
- a stream named in ``output_to_streams`` with an empty ``data_map`` is created for the
  cohort; ``GET /uploads`` lists ``subpath`` as ``directory/filename`` with an MD5
  ``md5_hash``; no FIG attribute names an address, so the scope payload asks for none by
  default (``scope_attributes`` adds some): the identified representation adds the address;
- rate limits are unpublished: 429 with ``Retry-After`` is honoured like any other.

Errors: 401/403 -> :class:`AuthenticationFailed`; 429 waits out ``Retry-After`` (or backs
off) and 5xx/timeouts are retried for reads, then :class:`RateLimited` /
:class:`VendorUnavailable`; other 4xx -> :class:`RequestRejected` with Faraday's ``note``.
A row of the export that cannot be read as a mailable US address is skipped, logged by line
number with the reason, and counted in :attr:`BatchPoll.skipped`; log lines never quote an
email or any other value of a row.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from mail_pipeline.domain.addresses import (
    US_MAILABLE_STATES,
    clean,
    normalize_us_state,
    normalize_us_zip,
)
from mail_pipeline.domain.fields import (
    ADDRESS_LINE_MAX,
    CITY_MAX,
    InvalidField,
    bad_character,
    check_text,
)
from mail_pipeline.integrations.enrichment.base import (
    AppendedAddress,
    BatchPoll,
    BatchState,
    IdentityRow,
)
from mail_pipeline.integrations.errors import (
    Conflict,
    IntegrationError,
    RateLimited,
    RequestRejected,
    VendorUnavailable,
)
from mail_pipeline.integrations.http import NO_RETRY, HttpApi, RetryPolicy, default_error

log = logging.getLogger(__name__)

VENDOR = "faraday"
BASE_URL = "https://api.faraday.ai/v1"
#: A target's CSV of a large batch takes a while to come back.
DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=5.0)
#: How often :meth:`FaradayEnricher.wait` asks.
DEFAULT_POLL_INTERVAL = 30.0

#: The CSV we upload: these columns, in this order.
REFERENCE_COLUMN = "reference"
UPLOAD_COLUMNS = (REFERENCE_COLUMN, "email", "first_name", "last_name", "postcode")
UPLOAD_FILENAME = "people.csv"
#: Faraday identity field -> our column.
IDENTITY_SETS = {
    "person": {
        "email": "email",
        "person_first_name": "first_name",
        "person_last_name": "last_name",
        "postcode": "postcode",
    }
}
TRANSFORM_PRESET = "address_only"
#: [U] the export's address columns, by the names tried in order.
LINE1_COLUMNS = ("house_number_and_street", "address_line_1")
LINE2_COLUMNS = ("address_line_2",)
CITY_COLUMNS = ("city",)
STATE_COLUMNS = ("state",)
POSTCODE_COLUMNS = ("postcode", "zip")
COUNTRY = "US"

#: Resources are named ``<NAME_PREFIX><batch name>``; the upload directory and the stream
#: (which take identifiers) ``<SLUG_PREFIX><slug>_<hash of the batch name>``.
NAME_PREFIX = "address-append "
SLUG_PREFIX = "address_append_"
MAX_BATCH_NAME = 100
MAX_REFERENCE = 128
IN_PROGRESS = frozenset({"new", "starting", "running"})
_NOT_SLUG = re.compile(r"[^a-z0-9]+")


class MalformedResponse(RequestRejected):
    """Faraday answered 2xx with a body that is not what the API documents."""


class BatchMismatch(RequestRejected):
    """The batch name was already used for different people (the upload differs)."""


def faraday_error(response: httpx.Response) -> IntegrationError:
    """Map ``{"error": <CODE>, "id", "note", "validationErrors": [{"path", "message"}]}`` to a
    typed error: the note, the first validation error, and Faraday's error id (which its
    support asks for)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("note") or body.get("error"), str):
        return default_error(VENDOR, response, response.text[:300] or response.reason_phrase)
    code = body.get("error")
    code = code if isinstance(code, str) else None
    note = body.get("note")
    message = note if isinstance(note, str) and note else code or response.reason_phrase
    problems = body.get("validationErrors")
    if isinstance(problems, list) and problems and isinstance(problems[0], dict):
        first = problems[0]
        where, what = first.get("path"), first.get("message")
        if isinstance(what, str):
            message += f" ({where}: {what})" if isinstance(where, str) and where else f" ({what})"
        if len(problems) > 1:
            message += f"; and {len(problems) - 1} more"
    error_id = body.get("id")
    if isinstance(error_id, str) and error_id:
        message += f" [error id {error_id}]"
    return default_error(VENDOR, response, message, code)


@dataclass(frozen=True)
class BatchNames:
    """What the resources of one batch are called at Faraday."""

    name: str
    directory: str
    filename: str
    stream: str

    @property
    def subpath(self) -> str:
        return f"{self.directory}/{self.filename}"


def batch_names(batch_name: str) -> BatchNames:
    """The names of ``batch_name``'s resources (a :class:`ValueError` for a bad name)."""
    if not batch_name or batch_name != batch_name.strip():
        raise ValueError("a batch name must be non-empty text without surrounding spaces")
    if len(batch_name) > MAX_BATCH_NAME or bad_character(batch_name):
        raise ValueError(f"a batch name is at most {MAX_BATCH_NAME} printable characters")
    digest = hashlib.sha256(batch_name.encode()).hexdigest()[:12]
    slug = _NOT_SLUG.sub("_", batch_name.lower()).strip("_")[:40]
    identifier = f"{SLUG_PREFIX}{slug}_{digest}" if slug else f"{SLUG_PREFIX}{digest}"
    return BatchNames(
        name=f"{NAME_PREFIX}{batch_name}",
        directory=identifier,
        filename=UPLOAD_FILENAME,
        stream=identifier,
    )


def upload_csv(people: Sequence[IdentityRow]) -> bytes:
    """The CSV of ``people`` (the same bytes for the same people, so a re-submit can tell
    its own upload); a :class:`ValueError` for no people or a bad or repeated reference."""
    if not people:
        raise ValueError("a batch needs at least one person")
    seen: set[str] = set()
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(UPLOAD_COLUMNS)
    for person in people:
        reference = person.reference
        if not reference or reference != reference.strip() or len(reference) > MAX_REFERENCE:
            raise ValueError(f"a reference is 1 to {MAX_REFERENCE} characters, no spaces around")
        if bad_character(reference):
            raise ValueError("a reference must be printable")
        if reference in seen:
            raise ValueError(f"reference {reference} appears twice in the batch")
        seen.add(reference)
        writer.writerow(
            [
                reference,
                clean(person.email) or "",
                clean(person.first_name) or "",
                clean(person.last_name) or "",
                clean(person.postcode) or "",
            ]
        )
    return out.getvalue().encode("utf-8")


class FaradayEnricher:
    """One Faraday account (one API key) as an :class:`AddressEnricher`."""

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = BASE_URL,
        transport: httpx.BaseTransport | None = None,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        timeout: httpx.Timeout | None = None,
        scope_attributes: Sequence[str] = (),
    ) -> None:
        """``sleep`` paces retries and :meth:`wait`; ``monotonic`` is :meth:`wait`'s clock.
        ``scope_attributes`` are FIG attributes added to each scope's payload."""
        if not api_key:
            raise ValueError("a Faraday client needs an API key")
        self.retry = retry or RetryPolicy()
        self.sleep = sleep
        self.monotonic = monotonic
        self.scope_attributes = tuple(scope_attributes)

        def api(policy: RetryPolicy) -> HttpApi:
            return HttpApi(
                vendor=VENDOR,
                base_url=base_url,
                headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json"},
                retry=policy,
                transport=transport,
                error_mapper=faraday_error,
                sleep=sleep,
                timeout=timeout or DEFAULT_TIMEOUT,
            )

        self.api = api(self.retry)
        #: Creates are never retried blindly: see the module docstring.
        self._create = api(NO_RETRY)

    # -- submitting ---------------------------------------------------------------------
    def submit(self, batch_name: str, people: Sequence[IdentityRow]) -> str:
        """Send ``people`` as the batch ``batch_name``; return the target id.

        Idempotent by ``batch_name``: an existing target of the batch is returned as it is;
        otherwise every resource of the chain is looked up by name and created only when
        missing (see the module docstring). Raises :class:`ValueError` for a bad name or
        batch, :class:`BatchMismatch` when the name was used for other people."""
        names = batch_names(batch_name)
        content = upload_csv(people)
        target = self._named("/targets", names.name)
        if target is not None:
            log.info("faraday batch %s: target %s already exists", batch_name, target["id"])
            return str(target["id"])
        self._ensure(
            f"upload {names.subpath}",
            lambda: self._uploaded(names, content),
            lambda: self._upload(names, content),
        )
        dataset = self._ensure_named(
            "/datasets",
            names.name,
            {
                "name": names.name,
                "options": {"type": "hosted_csv", "upload_directory": names.directory},
                "identity_sets": IDENTITY_SETS,
                "reference_key_columns": [REFERENCE_COLUMN],
                "upsert_columns": [REFERENCE_COLUMN],
                "output_to_streams": {names.stream: {"data_map": {}}},
            },
        )
        cohort = self._ensure_named(
            "/cohorts", names.name, {"name": names.name, "stream_name": names.stream}
        )
        payload: dict[str, Any] = {}
        if self.scope_attributes:
            payload["attributes"] = list(self.scope_attributes)
        scope = self._ensure_named(
            "/scopes",
            names.name,
            {
                "name": names.name,
                "population": {"cohort_ids": [cohort]},
                "payload": payload,
                "preview": False,
            },
        )
        target_id = self._ensure_named(
            "/targets",
            names.name,
            {
                "name": names.name,
                "scope_id": scope,
                "options": {"type": "hosted_csv"},
                "representation": {
                    "mode": "identified",
                    "aggregate": "person",
                    "transform_preset": TRANSFORM_PRESET,
                },
            },
        )
        log.info(
            "faraday batch %s: %d people, dataset %s, target %s",
            batch_name,
            len(people),
            dataset,
            target_id,
        )
        return target_id

    def _ensure(
        self,
        what: str,
        find: Callable[[], dict[str, Any] | None],
        create: Callable[[], dict[str, Any]],
    ) -> dict[str, Any]:
        """Look up, then create once; after a failed create, look up again before retrying."""
        last_error: IntegrationError | None = None
        for attempt in range(1, self.retry.max_attempts + 1):
            found = find()
            if found is not None:
                return found
            try:
                created = create()
            except Conflict as exc:
                # A create of ours whose answer was lost got there first: use it.
                found = find()
                if found is not None:
                    return found
                raise exc from None
            except (VendorUnavailable, RateLimited) as exc:
                last_error = exc
                wait = exc.retry_after if isinstance(exc, RateLimited) else None
                if attempt == self.retry.max_attempts or (
                    wait is not None and wait > self.retry.max_retry_after
                ):
                    break
                log.info("faraday: creating %s failed (%s); checking, then retrying", what, exc)
                self.sleep(wait if wait is not None else self.retry.backoff(attempt))
                continue
            log.info("faraday: created %s", what)
            return created
        assert last_error is not None
        raise last_error

    def _ensure_named(self, path: str, name: str, body: dict[str, Any]) -> str:
        """The id of the resource of ``name`` under ``path``, created from ``body`` if absent."""
        resource = self._ensure(
            f"{path.strip('/')[:-1]} {name!r}",
            lambda: self._named(path, name),
            lambda: _resource(self._create.request("POST", path, json=body), path),
        )
        return str(resource["id"])

    def _named(self, path: str, name: str) -> dict[str, Any] | None:
        """The resource called ``name`` in the list at ``path`` (the oldest, if several)."""
        found = [item for item in self._list(path) if item.get("name") == name]
        if not found:
            return None
        if len(found) > 1:
            log.warning("faraday: %d resources under %s share the name %r", len(found), path, name)
        found.sort(key=lambda item: str(item.get("created_at") or ""))
        if not isinstance(found[0].get("id"), str) or not found[0]["id"]:
            raise MalformedResponse(VENDOR, f"a resource listed under {path} has no id")
        return found[0]

    def _list(self, path: str) -> list[dict[str, Any]]:
        body = _json(self.api.request("GET", path), f"the list at {path}")
        if not isinstance(body, list):
            raise MalformedResponse(VENDOR, f"the list at {path} is not a JSON array")
        return [item for item in body if isinstance(item, dict)]

    def _uploaded(self, names: BatchNames, content: bytes) -> dict[str, Any] | None:
        """The batch's upload, if there is one; :class:`BatchMismatch` if it holds other
        people."""
        for upload in self._list("/uploads"):
            subpath = upload.get("subpath")
            if not isinstance(subpath, str) or subpath.strip("/") != names.subpath:
                continue
            if not _same_file(upload, content):
                raise BatchMismatch(
                    VENDOR,
                    f"{names.subpath} already holds other people: batch {names.name!r} was "
                    "submitted before with a different list; use a new batch name",
                )
            return upload
        return None

    def _upload(self, names: BatchNames, content: bytes) -> dict[str, Any]:
        path = f"/uploads/{quote(names.directory, safe='')}/{quote(names.filename, safe='')}"
        self._create.request(
            "POST", path, content=content, headers={"Content-Type": "application/octet-stream"}
        )
        return {"subpath": names.subpath, "file_size": len(content)}

    # -- polling ------------------------------------------------------------------------
    def poll(self, batch_id: str) -> BatchPoll:
        """The target's state; once ``ready``, its export read into addresses."""
        path = f"/targets/{quote(batch_id, safe='')}"
        target = _json(self.api.request("GET", path), "a target")
        if not isinstance(target, dict):
            raise MalformedResponse(VENDOR, "a target is not a JSON object")
        status = target.get("status")
        if status in IN_PROGRESS:
            return BatchPoll(BatchState.RUNNING)
        if status == "error":
            detail = target.get("status_error")
            reason = detail if isinstance(detail, str) and detail else "the target failed"
            return BatchPoll(BatchState.FAILED, reason=f"faraday: {reason}")
        if status != "ready":
            raise MalformedResponse(VENDOR, f"target {batch_id} has an unknown status")
        response = self.api.request(
            "GET", f"{path}/download.csv", headers={"Accept": "text/csv"}, follow_redirects=True
        )
        matches, skipped = read_matches(response.content, where=f"faraday target {batch_id}")
        log.info("faraday target %s: %d matched, %d rows skipped", batch_id, len(matches), skipped)
        return BatchPoll(BatchState.READY, matches=matches, skipped=skipped)

    def wait(
        self, batch_id: str, *, timeout: float, interval: float = DEFAULT_POLL_INTERVAL
    ) -> BatchPoll:
        """Poll every ``interval`` seconds until the batch is ready or failed, or ``timeout``
        seconds have passed (then the last, ``running``, answer)."""
        deadline = self.monotonic() + timeout
        while True:
            result = self.poll(batch_id)
            remaining = deadline - self.monotonic()
            if result.state is not BatchState.RUNNING or remaining <= 0:
                return result
            self.sleep(min(interval, remaining))

    def close(self) -> None:
        self.api.close()
        self._create.close()

    def __enter__(self) -> FaradayEnricher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _json(response: httpx.Response, what: str) -> Any:
    try:
        return response.json()
    except ValueError:
        raise MalformedResponse(VENDOR, f"{what} is not JSON") from None
    except RecursionError:
        raise MalformedResponse(VENDOR, f"{what} nests deeper than can be read") from None


def _resource(response: httpx.Response, path: str) -> dict[str, Any]:
    body = _json(response, f"the answer of POST {path}")
    if not isinstance(body, dict) or not isinstance(body.get("id"), str) or not body["id"]:
        raise MalformedResponse(VENDOR, f"the answer of POST {path} has no id")
    return body


def _same_file(upload: Mapping[str, Any], content: bytes) -> bool:
    """Whether a listed upload is ``content``: by MD5 (hex or base64) when listed, else by
    size."""
    listed = upload.get("md5_hash")
    if isinstance(listed, str) and listed:
        digest = hashlib.md5(content, usedforsecurity=False).digest()
        return listed.strip().lower() == digest.hex() or listed.strip() == (
            base64.b64encode(digest).decode()
        )
    size = upload.get("file_size")
    return not isinstance(size, int) or size == len(content)


# -- reading the export ------------------------------------------------------------------


class _BadRow(ValueError):
    """A row of the export that is no address; ``str()`` says why, quoting no value."""


def read_matches(content: bytes, *, where: str) -> tuple[tuple[AppendedAddress, ...], int]:
    """The addresses of a target's CSV and how many rows were skipped.

    A row that cannot be read, or whose address is not a mailable US address, is skipped and
    logged (line number and reason, never a value); a row without any address is a person
    not matched; a reference seen before is skipped. A CSV without the reference or the
    address columns is a :class:`MalformedResponse`: then no row could be read."""
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise MalformedResponse(VENDOR, f"the CSV of {where} is not UTF-8") from None
    if not text.strip():
        return (), 0
    rows = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = [name.strip().lower() for name in next(rows)]
    except csv.Error:
        raise MalformedResponse(VENDOR, f"the header of the CSV of {where} is unreadable") from None
    columns = _columns(header, where)
    matches: list[AppendedAddress] = []
    seen: set[str] = set()
    skipped = 0
    while True:
        try:
            row = next(rows)
        except StopIteration:
            break
        except csv.Error as exc:
            skipped += 1
            log.warning("%s: CSV line %d skipped: unreadable (%s)", where, rows.line_num, exc)
            continue
        if not row or row == [""]:
            continue
        try:
            address = _address(row, len(header), columns)
            if address is not None and address.reference in seen:
                raise _BadRow("repeats a reference of an earlier row")
        except _BadRow as exc:
            skipped += 1
            log.warning("%s: CSV line %d skipped: %s", where, rows.line_num, exc)
            continue
        if address is not None:
            seen.add(address.reference)
            matches.append(address)
    return tuple(matches), skipped


def _columns(header: list[str], where: str) -> dict[str, int | None]:
    """Field -> column index (``line2`` may be absent)."""

    def index(names: Sequence[str]) -> int | None:
        return next((header.index(name) for name in names if name in header), None)

    columns = {
        "reference": index((REFERENCE_COLUMN,)),
        "line1": index(LINE1_COLUMNS),
        "line2": index(LINE2_COLUMNS),
        "city": index(CITY_COLUMNS),
        "state": index(STATE_COLUMNS),
        "postcode": index(POSTCODE_COLUMNS),
    }
    missing = [field for field, at in columns.items() if at is None and field != "line2"]
    if missing:
        raise MalformedResponse(
            VENDOR, f"the CSV of {where} has no column for {', '.join(missing)}"
        )
    return columns


def _address(
    row: list[str], width: int, columns: Mapping[str, int | None]
) -> AppendedAddress | None:
    """The row's address; ``None`` when it has none (the person was not matched)."""
    if len(row) != width:
        raise _BadRow(f"has {len(row)} fields; the header has {width}")

    def value(field: str) -> str | None:
        at = columns[field]
        return None if at is None else clean(row[at])

    reference = value("reference")
    if reference is None:
        raise _BadRow("has no reference")
    if len(reference) > MAX_REFERENCE or bad_character(reference):
        raise _BadRow("has a reference that is not one of ours")
    fields = {field: value(field) for field in ("line1", "line2", "city", "state", "postcode")}
    if not any(fields.values()):
        return None
    missing = [label for label in ("line1", "city", "state", "postcode") if not fields[label]]
    if missing:
        raise _BadRow(f"has an address without {', '.join(missing)}")
    try:
        line1 = check_text("address line 1", fields["line1"], ADDRESS_LINE_MAX)
        line2 = check_text("address line 2", fields["line2"], ADDRESS_LINE_MAX)
        city = check_text("city", fields["city"], CITY_MAX)
    except InvalidField as exc:
        raise _BadRow(str(exc)) from None
    state = normalize_us_state(fields["state"])
    if state is None or state not in US_MAILABLE_STATES:
        raise _BadRow("has a state that is no US state with postal delivery")
    postcode = normalize_us_zip(fields["postcode"], state)
    if postcode is None:
        raise _BadRow("has a postcode that is no US ZIP code")
    assert line1 is not None and city is not None
    return AppendedAddress(
        reference=reference,
        line1=line1,
        line2=line2,
        city=city,
        state=state,
        postcode=postcode,
        country=COUNTRY,
    )
