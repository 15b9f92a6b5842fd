"""Webhook signatures of the three printers: produced by the sandboxes, checked by the clients.

All three are HMAC-SHA256 over the raw body, each framed differently:

- Lob: ``Lob-Signature`` = hex HMAC(secret, ``f"{Lob-Signature-Timestamp}.{body}"``); the
  timestamp is epoch **milliseconds** (third-party implementations agree; Lob's own page could
  not be read in full, so a value small enough to be seconds is also accepted). Lob documents
  no tolerance; we allow +-5 minutes.
- Stannp: ``X-Stannp-Signature`` = hex HMAC(secret, body). No timestamp, so no replay
  protection: consumers de-duplicate on ``(piece id, status)``.
- IntelliPrint (Standard Webhooks / Svix): ``svix-signature`` = ``v1,<base64 HMAC(key,
  f"{svix-id}.{svix-timestamp}.{body}")>`` where ``key`` is the base64-decoded part of the
  ``whsec_...`` secret and the timestamp is epoch seconds; the header may carry several
  space-separated signatures (during secret rotation), any one matching is enough.

Verification failures raise :class:`MalformedWebhook` with the reason, whatever the headers
and body hold (a lone surrogate, non-ASCII signatures, a timestamp that is not a finite
number): a message that cannot be verified is refused, never an error of another kind.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from mail_pipeline.integrations.printers.base import MalformedWebhook
from mail_pipeline.integrations.printers.common import header

DEFAULT_TOLERANCE_SECONDS = 300.0


def _hmac(key: bytes, message: str) -> bytes:
    try:
        data = message.encode("utf-8")
    except UnicodeEncodeError as exc:
        # Only a lone surrogate has no UTF-8 form: no HTTP body or header ever held one.
        raise MalformedWebhook("the webhook is not UTF-8 text (it holds a lone surrogate)") from exc
    return hmac.new(key, data, hashlib.sha256).digest()


def _same(expected: str, offered: str) -> bool:
    """Constant-time comparison of a signature with what was offered, whatever characters
    that holds (``hmac.compare_digest`` refuses non-ASCII text)."""
    return hmac.compare_digest(expected.encode(), offered.encode("utf-8", "surrogatepass"))


def _check_age(vendor: str, sent_at: float, now: float, tolerance: float) -> None:
    """Refuse a signature older or newer than ``tolerance``; a timestamp that is not a
    finite number (``nan`` compares false with everything) is refused as well."""
    if not math.isfinite(sent_at):
        raise MalformedWebhook(f"{vendor} webhook timestamp is not a finite number")
    skew = abs(now - sent_at)
    if skew > tolerance:
        raise MalformedWebhook(
            f"{vendor} webhook timestamp is {skew:.0f} s away from now, outside the "
            f"{tolerance:.0f} s tolerance (a replay, or a clock problem)"
        )


def ingress_time(received_at: str | None, clock: Callable[[], float]) -> float:
    """The moment a signature's age is measured at: when our webhook ingress received it.

    A webhook may wait in the status queue (a backlog, a redelivery while its mailpiece is not
    recorded yet) for longer than the tolerance; that is not a replay. The replay window is
    therefore checked against the envelope's ``received_at`` (written by our own ingress onto
    our own queue), and against the consumer's clock only when the envelope has none.
    """
    if received_at:
        try:
            moment = datetime.fromisoformat(received_at.replace("Z", "+00:00"))
        except ValueError:
            return clock()
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()
    return clock()


# -- Lob ------------------------------------------------------------------------------------
def lob_signature(secret: str, timestamp: str, body: str) -> str:
    return _hmac(secret.encode("utf-8"), f"{timestamp}.{body}").hex()


def verify_lob(
    secret: str,
    headers: Mapping[str, str],
    body: str,
    *,
    now: float,
    tolerance: float = DEFAULT_TOLERANCE_SECONDS,
) -> None:
    signature = header(headers, "Lob-Signature")
    timestamp = header(headers, "Lob-Signature-Timestamp")
    if not signature or not timestamp:
        raise MalformedWebhook("lob webhook is not signed (no Lob-Signature/-Timestamp header)")
    expected = lob_signature(secret, timestamp, body)
    if not _same(expected, signature.strip().lower()):
        raise MalformedWebhook("lob webhook signature does not match the body")
    try:
        number = float(timestamp)
    except ValueError as exc:
        raise MalformedWebhook(f"lob webhook timestamp {timestamp!r} is not a number") from exc
    # Epoch milliseconds are > 1e11 for any date after 1973; smaller values are seconds.
    _check_age("lob", number / 1000 if number > 1e11 else number, now, tolerance)


# -- Stannp ---------------------------------------------------------------------------------
def stannp_signature(secret: str, body: str) -> str:
    return _hmac(secret.encode("utf-8"), body).hex()


def verify_stannp(secret: str, headers: Mapping[str, str], body: str) -> None:
    signature = header(headers, "X-Stannp-Signature")
    if not signature:
        raise MalformedWebhook("stannp webhook is not signed (no X-Stannp-Signature header)")
    if not _same(stannp_signature(secret, body), signature.strip().lower()):
        raise MalformedWebhook("stannp webhook signature does not match the body")


# -- Standard Webhooks / Svix (IntelliPrint) -------------------------------------------------
def svix_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret."""
    encoded = secret[len("whsec_") :] if secret.startswith("whsec_") else secret
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("a Standard Webhooks secret must be 'whsec_' + base64") from exc


def svix_signature(secret: str, message_id: str, timestamp: str, body: str) -> str:
    digest = _hmac(svix_key(secret), f"{message_id}.{timestamp}.{body}")
    return "v1," + base64.b64encode(digest).decode("ascii")


def verify_svix(
    vendor: str,
    secret: str,
    headers: Mapping[str, str],
    body: str,
    *,
    now: float,
    tolerance: float = DEFAULT_TOLERANCE_SECONDS,
) -> None:
    message_id = header(headers, "svix-id") or header(headers, "webhook-id")
    timestamp = header(headers, "svix-timestamp") or header(headers, "webhook-timestamp")
    signatures = header(headers, "svix-signature") or header(headers, "webhook-signature")
    if not message_id or not timestamp or not signatures:
        raise MalformedWebhook(
            f"{vendor} webhook is not signed (needs svix-id, svix-timestamp, svix-signature)"
        )
    expected = svix_signature(secret, message_id, timestamp, body)
    offered = [s for s in signatures.split() if s.startswith("v1,")]
    if not any(_same(expected, s) for s in offered):
        raise MalformedWebhook(f"{vendor} webhook signature does not match the body")
    try:
        sent_at = float(timestamp)
    except ValueError as exc:
        raise MalformedWebhook(f"{vendor} webhook timestamp {timestamp!r} is not a number") from exc
    _check_age(vendor, sent_at, now, tolerance)
