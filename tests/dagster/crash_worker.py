"""Run one mailing batch and die hard (``os._exit``) right after the Lob sandbox accepted the
``kill_after``-th postcard, before its answer reaches the caller: the printer has the piece,
the database does not know. Used by ``test_crash_recovery`` as a subprocess:

    python -m tests.dagster.crash_worker DB_URL SANDBOX_PATH BATCH_ID KILL_AFTER
"""

from __future__ import annotations

import os
import sys
import threading
from functools import partial

import httpx

from mail_pipeline.db.engine import unit_of_work
from mail_pipeline.integrations.billing.sandbox import SANDBOX_API_KEY, StripeSandbox
from mail_pipeline.integrations.billing.stripe_meter import StripeMeter
from mail_pipeline.integrations.printers.lob import LobPrinter
from mail_pipeline.integrations.printers.sandbox import sandbox_transports
from mail_pipeline.integrations.printers.strategy import PrinterStrategy
from mail_pipeline.integrations.queues.local import LocalQueue
from mail_pipeline.integrations.sandbox.store import SandboxStore
from mail_pipeline.resources.cdp import SandboxCdp
from mail_pipeline.services.mailing import MailingServices, mail_batch

KILLED = 137


class DieAfterAccepting(httpx.BaseTransport):
    def __init__(self, inner: httpx.BaseTransport, kill_after: int) -> None:
        self.inner = inner
        self.kill_after = kill_after
        self.accepted = 0
        self.lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.method == "POST" and request.url.path.endswith("/postcards"):
            with self.lock:
                self.accepted += 1
                if self.accepted >= self.kill_after:
                    os._exit(KILLED)
        return response


def main(db_url: str, sandbox_path: str, batch_id: str, kill_after: int) -> None:
    store = SandboxStore(sandbox_path)
    lob = sandbox_transports(store)["lob"]
    printer = LobPrinter(
        lob.api_key, transport=DieAfterAccepting(lob, kill_after), webhook_secret=lob.webhook_secret
    )
    services = MailingServices(
        printers=PrinterStrategy({"US": "lob"}, {"lob": printer}),
        billing=StripeMeter(SANDBOX_API_KEY, transport=StripeSandbox(store)),
        cdp=SandboxCdp(sandbox_path=sandbox_path),
        image_deletions=LocalQueue(":memory:", "image-deletion"),
    )
    mail_batch(
        partial(unit_of_work, db_url), batch_id, services, run_id="doomed-run", concurrency=4
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
    sys.exit(0)
