"""Address enrichment's rules: who is sent, how long a batch may take, what is cached.

Recipients created without a postal address (``AddressEnrichable``) are sent to the address
vendor (Faraday) in batches at 01:00, 07:00, 13:00 and 19:00 New York time
(:data:`ENRICHMENT_CRON`):

1. a batch holds at most :data:`BATCH_SIZE` recipients of one organization, of campaigns
   that are Pending or Active in an active organization; they move to ``AddressEnriching``;
2. a recipient whose identity the cache answered in the last :data:`CACHE_TTL` is decided
   from the cache, without asking the vendor;
3. the others are submitted; the vendor's answer comes later (a sensor polls open batches).
   A matched recipient's address is judged by the sync's own rules
   (``domain.profiles.judge_profile``): mailable -> ``Pending`` with it; refused ->
   ``Skipped`` with the reason. An unmatched recipient ends ``Skipped`` with
   :data:`NO_MATCH`;
4. a batch the vendor failed, or that is still running :data:`BATCH_TIMEOUT` after it was
   submitted, returns its recipients to ``AddressEnrichable`` for the next batch; one that
   was taken :data:`MAX_ATTEMPTS` times ends in ``Error`` with the reason instead (an
   operator retry sends it back);
5. cache rows older than :data:`CACHE_TTL` are deleted by a daily job;
6. Faraday finds US addresses only (:data:`ENRICHMENT_COUNTRIES`): the waiting recipients of
   an organization that mails from elsewhere end ``Skipped`` with :data:`NOT_COVERED`
   instead of being sent (their postcards are printed in that country, in its sizes).

The identity sent and cached is a SHA-256 of the organization and the normalized email
(:func:`identity_key`): the raw email is never a key, a reference or a log line. The cache is
per organization: one brand's answers are not reused for another's customers.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta

#: The four daily times, New York (DST-safe: the schedule runs in that zone).
ENRICHMENT_CRON = "0 1,7,13,19 * * *"
ENRICHMENT_TIMEZONE = "America/New_York"
#: Recipients per batch (one organization each).
BATCH_SIZE = 1_000
#: Batches an organization may have open at once (a new one waits for these).
OPEN_BATCHES_PER_ORGANIZATION = 4
#: A batch still running this long after submission is given up.
BATCH_TIMEOUT = timedelta(hours=6)
#: Cached answers are reused, then deleted, after this long.
CACHE_TTL = timedelta(days=90)
#: A recipient taken by this many batches that all failed ends in Error.
MAX_ATTEMPTS = 3

#: The organizations' countries (``organizations.country``) whose people the vendor covers.
ENRICHMENT_COUNTRIES = frozenset({"US"})

NO_EMAIL = "no email to look an address up with"
NOT_COVERED = (
    "address enrichment finds US addresses only, and the organization mails from {country}"
)
NO_MATCH = "address enrichment found no postal address"
REFUSED = "address enrichment found an address that cannot be mailed: {problem}"
GAVE_UP = "address enrichment failed {attempts} times (last: {reason})"


def identity_key(organization_id: int, email_key: str) -> str:
    """The cache key and the vendor reference of a person: 64 hex digits, deterministic, and
    not reversible to the email."""
    text = f"{organization_id}:{email_key}"
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
