"""Offer codes in the database: drawing from pools, generating, fencing, re-proofs, uploads."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from mail_pipeline.cli import main
from mail_pipeline.db.engine import unit_of_work
from mail_pipeline.db.models import Campaign, OfferCode, Recipient
from mail_pipeline.db.offer_codes import OfferCodeGateway
from mail_pipeline.db.recipients import RecipientGateway
from mail_pipeline.domain.recipients import RecipientStatus
from mail_pipeline.integrations.renderer.backup import BackupRenderer
from mail_pipeline.integrations.renderer.chain import FallbackRenderer
from mail_pipeline.integrations.renderer.models import ProofRequest, RenderedProof
from mail_pipeline.resources.images import SandboxImageHost
from mail_pipeline.services import proofing
from mail_pipeline.services.offer_codes import (
    MAX_DRAWS,
    CodeNeed,
    UploadRefused,
    assign_offer_codes,
    upload_pool,
)
from mail_pipeline.services.proofing import proof_batch

S = RecipientStatus
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
ADDRESS: dict[str, Any] = {
    "last_name": "Doe",
    "address1": "1 Oak St",
    "city": "Austin",
    "region": "TX",
    "postal_code": "78701",
    "country": "US",
}
DESIGN: dict[str, Any] = {
    "template": "classic",
    "brand_name": "Juniper Trail",
    "headline": "{first_name}, hello",
    "offer_code_prefix": "TRAIL",
    "shop_url": "https://shop.juniper-trail.example",
}


def scripted(*codes: str) -> Callable[[str | None], str]:
    """A code generator that hands out ``codes`` in order."""
    queue = iter(codes)
    return lambda prefix: next(queue)


def add_pool(db_url: str, organization_id: int, campaign_id: int | None, *codes: str) -> None:
    with unit_of_work(db_url) as session:
        for code in codes:
            session.add(
                OfferCode(organization_id=organization_id, campaign_id=campaign_id, code=code)
            )
            session.flush()


def held(db_url: str, campaign_id: int, add_recipients, n: int, holder: str) -> list[int]:  # type: ignore[no-untyped-def]
    """``n`` recipients of the campaign in Proofing, held by the run ``holder``."""
    ids = add_recipients(campaign_id, n, **ADDRESS)
    with unit_of_work(db_url) as session:
        gateway = RecipientGateway(session)
        claim = gateway.claim_batch(S.PENDING, S.PROOFING_STAGED, n, campaign_id=campaign_id)
        assert sorted(claim.ids) == ids
        assert gateway.start_batch(claim.batch_id, S.PROOFING_STAGED, S.PROOFING, holder)
    return ids


def sibling_campaign(db_url: str, make_campaign, org: int) -> int:  # type: ignore[no-untyped-def]
    """Another campaign of the organization ``org``."""
    _, campaign = make_campaign(design=DESIGN)
    with unit_of_work(db_url) as session:
        session.get_one(Campaign, campaign).organization_id = org
    return campaign


def needs(org: int, campaign: int, ids: list[int], prefix: str | None = "TRAIL") -> list[CodeNeed]:
    return [CodeNeed(i, org, campaign, prefix) for i in ids]


def recipient_codes(db_url: str, ids: list[int]) -> dict[int, str | None]:
    with unit_of_work(db_url) as session:
        rows = session.execute(
            select(Recipient.id, Recipient.offer_code).where(Recipient.id.in_(ids))
        )
        return {int(rid): code for rid, code in rows}


def pool(db_url: str) -> dict[str, int | None]:
    with unit_of_work(db_url) as session:
        return {c.code: c.recipient_id for c in session.scalars(select(OfferCode))}


# -- drawing ----------------------------------------------------------------------------------
def test_codes_come_from_the_campaign_pool_then_the_organization_pool_then_are_generated(
    db_url: str, make_campaign, add_recipients
) -> None:
    org, campaign = make_campaign(design=DESIGN)
    other_org, _ = make_campaign(design=DESIGN)
    sibling = sibling_campaign(db_url, make_campaign, org)
    add_pool(db_url, org, None, "ORG-WIDE-1")
    add_pool(db_url, org, campaign, "CAMPAIGN-1", "CAMPAIGN-2")
    add_pool(db_url, org, sibling, "SIBLING-1")
    add_pool(db_url, other_org, None, "ELSEWHERE-1")
    ids = held(db_url, campaign, add_recipients, 5, "run-1")

    result = assign_offer_codes(
        partial(unit_of_work, db_url),
        needs(org, campaign, ids),
        "run-1",
        generate=scripted("TRAIL-GEN1", "TRAIL-GEN2"),
    )

    assert [result.codes[i] for i in ids] == [
        "CAMPAIGN-1",
        "CAMPAIGN-2",
        "ORG-WIDE-1",
        "TRAIL-GEN1",
        "TRAIL-GEN2",
    ]
    assert (result.from_pool, result.generated) == (3, 2)
    assert result.pool_exhausted == {campaign}
    assert recipient_codes(db_url, ids) == result.codes
    assert pool(db_url) == {
        "CAMPAIGN-1": ids[0],
        "CAMPAIGN-2": ids[1],
        "ORG-WIDE-1": ids[2],
        "SIBLING-1": None,
        "ELSEWHERE-1": None,
    }
    with unit_of_work(db_url) as session:
        assigned = session.scalars(select(OfferCode).where(OfferCode.code == "CAMPAIGN-1")).one()
        assert assigned.assigned_at is not None


def test_without_a_pool_codes_are_generated_with_the_designs_prefix(
    db_url: str, make_campaign, add_recipients
) -> None:
    org, campaign = make_campaign(design=DESIGN)
    ids = held(db_url, campaign, add_recipients, 3, "run-1")

    result = assign_offer_codes(partial(unit_of_work, db_url), needs(org, campaign, ids), "run-1")

    codes = recipient_codes(db_url, ids)
    assert len(set(codes.values())) == 3
    assert all((c or "").startswith("TRAIL-") and len(c or "") == 20 for c in codes.values())
    assert result.generated == 3 and not result.pool_exhausted, "no pool, so none ran out"


def test_a_generated_code_already_in_use_is_drawn_again(
    db_url: str, make_campaign, add_recipients
) -> None:
    org, campaign = make_campaign(design=DESIGN)
    other_campaign = sibling_campaign(db_url, make_campaign, org)
    (holder_of_taken,) = add_recipients(campaign, 1, S.PROOFED, offer_code="TRAIL-TAKEN")
    add_pool(db_url, org, other_campaign, "TRAIL-POOLED")  # another campaign's, not drawable
    ids = held(db_url, campaign, add_recipients, 1, "run-1")

    result = assign_offer_codes(
        partial(unit_of_work, db_url),
        needs(org, campaign, ids),
        "run-1",
        generate=scripted("TRAIL-TAKEN", "TRAIL-POOLED", "TRAIL-FRESH"),
    )

    assert recipient_codes(db_url, ids) == {ids[0]: "TRAIL-FRESH"}
    assert result.generated == 1
    assert recipient_codes(db_url, [holder_of_taken]) == {holder_of_taken: "TRAIL-TAKEN"}


def test_a_code_taken_at_the_moment_of_writing_is_drawn_again(
    db_url: str, make_campaign, add_recipients, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The unique constraint is the last word: a code another recipient got after the check
    (another run) rolls back only its savepoint - one recipient's, or the group of generated
    codes written together, which is then given codes one at a time - and it draws again."""
    org, campaign = make_campaign(design=DESIGN)
    add_recipients(campaign, 1, S.PROOFED, offer_code="TRAIL-RACED")
    ids = held(db_url, campaign, add_recipients, 3, "run-1")
    monkeypatch.setattr(OfferCodeGateway, "in_use", lambda self, org, code: False)
    monkeypatch.setattr(OfferCodeGateway, "in_use_many", lambda self, org, codes: set())

    result = assign_offer_codes(
        partial(unit_of_work, db_url),
        needs(org, campaign, ids),
        "run-1",
        generate=scripted("TRAIL-A", "TRAIL-RACED", "TRAIL-B", "TRAIL-C", "TRAIL-D", "TRAIL-E"),
    )

    codes = recipient_codes(db_url, ids)
    assert codes[ids[0]] == "TRAIL-A", "the first recipient finds the pools empty, alone"
    assert len(set(codes.values())) == 3
    assert set(codes.values()) <= {"TRAIL-A", "TRAIL-B", "TRAIL-C", "TRAIL-D", "TRAIL-E"}
    assert result.generated == 3 and not result.failed and not result.lost


def test_codes_generated_together_skip_those_in_use_or_repeated_and_the_unheld(
    db_url: str, make_campaign, add_recipients
) -> None:
    """Once the pools are known empty, a transaction's recipients get generated codes
    together: a code in use in the organization, or drawn twice in the group, is drawn
    again; a recipient the run no longer holds gets none (and is reported lost)."""
    org, campaign = make_campaign(design=DESIGN)
    add_recipients(campaign, 1, S.PROOFED, offer_code="TRAIL-TAKEN")
    ids = held(db_url, campaign, add_recipients, 5, "run-1")
    with unit_of_work(db_url) as session:  # another run took the last one over
        session.get_one(Recipient, ids[4]).claimed_by_run = "run-2"

    result = assign_offer_codes(
        partial(unit_of_work, db_url),
        needs(org, campaign, ids),
        "run-1",
        generate=scripted(
            "TRAIL-FIRST",
            "TRAIL-TAKEN",
            "TRAIL-TWICE",
            "TRAIL-TWICE",
            "TRAIL-X",
            "TRAIL-Y",
            "TRAIL-Z",
        ),
    )

    codes = recipient_codes(db_url, ids)
    assert codes[ids[0]] == "TRAIL-FIRST"
    assert codes[ids[4]] is None and result.lost == {ids[4]}
    given = [codes[i] for i in ids[1:4]]
    assert None not in given and len(set(given)) == 3
    assert "TRAIL-TAKEN" not in given and given.count("TRAIL-TWICE") == 1
    assert result.generated == 4 and not result.failed


def test_a_recipient_without_a_free_code_after_every_draw_is_left_without_one(
    db_url: str, make_campaign, add_recipients
) -> None:
    org, campaign = make_campaign(design=DESIGN)
    add_recipients(campaign, 1, S.PROOFED, offer_code="TRAIL-SAME")
    ids = held(db_url, campaign, add_recipients, 1, "run-1")

    result = assign_offer_codes(
        partial(unit_of_work, db_url),
        needs(org, campaign, ids),
        "run-1",
        generate=scripted(*["TRAIL-SAME"] * MAX_DRAWS),
    )

    assert result.failed == {ids[0]}
    assert recipient_codes(db_url, ids) == {ids[0]: None}


def test_a_run_that_lost_its_batch_writes_no_code_and_takes_none_from_the_pool(
    db_url: str, make_campaign, add_recipients
) -> None:
    org, campaign = make_campaign(design=DESIGN)
    add_pool(db_url, org, campaign, "CAMPAIGN-1", "CAMPAIGN-2")
    ids = held(db_url, campaign, add_recipients, 2, "run-new")

    result = assign_offer_codes(partial(unit_of_work, db_url), needs(org, campaign, ids), "run-old")

    assert result.lost == set(ids) and not result.codes
    assert recipient_codes(db_url, ids) == {i: None for i in ids}
    assert pool(db_url) == {"CAMPAIGN-1": None, "CAMPAIGN-2": None}


def test_a_recipient_that_has_a_code_is_never_given_another(
    db_url: str, make_campaign, add_recipients
) -> None:
    org, campaign = make_campaign(design=DESIGN)
    add_pool(db_url, org, campaign, "CAMPAIGN-1")
    ids = held(db_url, campaign, add_recipients, 1, "run-1")
    with unit_of_work(db_url) as session:
        session.get_one(Recipient, ids[0]).offer_code = "TRAIL-KEPT"

    result = assign_offer_codes(partial(unit_of_work, db_url), needs(org, campaign, ids), "run-1")

    assert recipient_codes(db_url, ids) == {ids[0]: "TRAIL-KEPT"}
    assert pool(db_url) == {"CAMPAIGN-1": None}, "the drawn code went back to the pool"
    assert result.lost == set(ids)


# -- two runs at once (PostgreSQL) -------------------------------------------------------------
@pytest.mark.postgres
def test_two_drawers_at_once_never_wait_for_or_share_a_code(
    db_url: str, make_campaign, add_recipients
) -> None:
    """A holds a drawn (uncommitted) code while B draws: B skips it instead of waiting."""
    org, campaign = make_campaign(design=DESIGN)
    codes = [f"POOL-{n:04d}" for n in range(20)]
    add_pool(db_url, org, campaign, *codes)
    ids = add_recipients(campaign, 20, **ADDRESS)
    drawn: dict[str, list[str | None]] = {"a": [], "b": []}
    errors: list[BaseException] = []
    a_drew, b_done = threading.Event(), threading.Event()

    def drawer(name: str, recipients: list[int], first: int) -> None:
        try:
            if name == "b":
                assert a_drew.wait(10)
            with unit_of_work(db_url) as session:
                gateway = OfferCodeGateway(session)
                for n, rid in enumerate(recipients):
                    drawn[name].append(gateway.draw(org, campaign, rid, now=NOW))
                    if name == "a" and n == first - 1:
                        a_drew.set()
                        b_done.wait(10)
        except BaseException as exc:  # noqa: BLE001 - the test thread fails on it
            errors.append(exc)
        finally:
            if name == "b":
                b_done.set()

    threads = [
        threading.Thread(target=drawer, args=("a", ids[:10], 1)),
        threading.Thread(target=drawer, args=("b", ids[10:], 0)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert None not in drawn["a"] + drawn["b"], "B waited for A's code and found it gone"
    assert sorted(drawn["a"] + drawn["b"]) == codes  # type: ignore[type-var]
    assert drawn["a"][0] == "POOL-0000" and "POOL-0000" not in drawn["b"]
    assert pool(db_url) == dict(zip(drawn["a"] + drawn["b"], ids, strict=True))


@pytest.mark.postgres
def test_two_proofing_runs_assigning_at_once_share_no_code(
    db_url: str, make_campaign, add_recipients
) -> None:
    org, campaign = make_campaign(design=DESIGN)
    add_pool(db_url, org, None, *(f"POOL-{n:04d}" for n in range(150)))
    first = held(db_url, campaign, add_recipients, 100, "run-1")
    second = held(db_url, campaign, add_recipients, 100, "run-2")
    results: dict[str, Any] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def run(holder: str, ids: list[int]) -> None:
        try:
            start.wait()
            results[holder] = assign_offer_codes(
                partial(unit_of_work, db_url), needs(org, campaign, ids), holder
            )
        except BaseException as exc:  # noqa: BLE001 - the test thread fails on it
            errors.append(exc)

    threads = [
        threading.Thread(target=run, args=("run-1", first)),
        threading.Thread(target=run, args=("run-2", second)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    codes = recipient_codes(db_url, first + second)
    assert None not in codes.values()
    assert max(Counter(codes.values()).values()) == 1
    assert sum(r.from_pool for r in results.values()) == 150
    assert sum(r.generated for r in results.values()) == 50
    assigned = {code: rid for code, rid in pool(db_url).items()}
    assert all(codes[rid] == code for code, rid in assigned.items() if rid is not None)
    assert None not in assigned.values()


# -- proofing ---------------------------------------------------------------------------------
class Recording(BackupRenderer):
    """Draws real proofs and remembers every request."""

    def __init__(self) -> None:
        super().__init__(antialias=False)
        self.requests: list[ProofRequest] = []
        self._lock = threading.Lock()

    def render(self, request: ProofRequest) -> RenderedProof:
        with self._lock:
            self.requests.append(request)
        return super().render(request)


@pytest.fixture
def images(tmp_path: Path) -> Iterator[Any]:
    yield SandboxImageHost(
        sandbox_path=str(tmp_path / "s.sqlite"), image_dir=str(tmp_path / "images")
    ).client()


def claim(db_url: str) -> str:
    with unit_of_work(db_url) as session:
        return RecipientGateway(session).claim_batch(S.PENDING, S.PROOFING_STAGED, 100).batch_id


def test_proofing_gives_each_recipient_its_code_before_rendering_it(
    db_url: str, make_campaign, add_recipients, images: Any
) -> None:
    org, campaign = make_campaign(design=DESIGN)
    add_pool(db_url, org, campaign, "CAMPAIGN-1")
    ids = add_recipients(campaign, 3, **ADDRESS)
    (no_address,) = add_recipients(campaign, 1)
    renderer = Recording()

    result = proof_batch(
        partial(unit_of_work, db_url),
        claim(db_url),
        FallbackRenderer([renderer]),
        images,
        id_key="k",
    )

    assert result.proofed == 3 and list(result.errors) == [no_address]
    codes = recipient_codes(db_url, [*ids, no_address])
    assert codes[ids[0]] == "CAMPAIGN-1"
    assert codes[no_address] is None, "a recipient that cannot be proofed takes no code"
    by_recipient = {r.recipient_id: r for r in renderer.requests}
    for rid in ids:
        assert by_recipient[rid].offer_code == codes[rid]
        assert (
            by_recipient[rid].qr_url == f"https://shop.juniper-trail.example/discount/{codes[rid]}"
        )
    assert result.offer_code_metadata() == {
        "offer_codes_from_pool": 1,
        "offer_codes_generated": 2,
        "offer_codes_kept": 0,
        "offer_code_pools_exhausted": [campaign],
    }


def test_a_reproof_keeps_the_code(db_url: str, make_campaign, add_recipients, images: Any) -> None:
    """A retried recipient (a piece the printer failed, sent back to Pending) keeps its code
    and its card is the same card."""
    _, campaign = make_campaign(design=DESIGN)
    ids = add_recipients(campaign, 2, **ADDRESS)
    sessions = partial(unit_of_work, db_url)
    first = Recording()
    proof_batch(sessions, claim(db_url), FallbackRenderer([first]), images, id_key="k")
    codes = recipient_codes(db_url, ids)
    with unit_of_work(db_url) as session:  # mailed, failed by the printer, retried
        gateway = RecipientGateway(session)
        for before, after in (
            (S.PROOFED, S.SENDING_STAGED),
            (S.SENDING_STAGED, S.SENDING),
            (S.SENDING, S.SENT),
            (S.SENT, S.ERROR),
            (S.ERROR, S.PENDING),
        ):
            assert gateway.transition_many(ids, before, after) == ids

    again = Recording()
    result = proof_batch(sessions, claim(db_url), FallbackRenderer([again]), images, id_key="k")

    assert recipient_codes(db_url, ids) == codes
    assert result.codes_kept == 2 and result.codes_generated == 0
    assert {r.recipient_id: r.fingerprint() for r in again.requests} == {
        r.recipient_id: r.fingerprint() for r in first.requests
    }


def test_a_recipient_left_without_a_code_goes_back_to_pending(
    db_url: str, make_campaign, add_recipients, images: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, campaign = make_campaign(design=DESIGN)
    add_recipients(campaign, 1, S.PROOFED, offer_code="TRAIL-SAME")
    (rid,) = add_recipients(campaign, 1, **ADDRESS)
    real = proofing.assign_offer_codes
    monkeypatch.setattr(
        proofing,
        "assign_offer_codes",
        lambda *a, **kw: real(*a, **kw, generate=lambda prefix: "TRAIL-SAME"),
    )

    result = proof_batch(
        partial(unit_of_work, db_url),
        claim(db_url),
        FallbackRenderer([Recording()]),
        images,
        id_key="k",
    )

    assert result.released == 1 and result.proofed == 0
    with unit_of_work(db_url) as session:
        row = session.get_one(Recipient, rid)
        assert row.status == S.PENDING and row.offer_code is None
        assert row.status_reason == "will retry: no free offer code could be drawn"


# -- uploads ----------------------------------------------------------------------------------
def test_an_upload_adds_new_codes_and_reports_every_line_it_did_not_add(
    db_url: str, make_campaign, add_recipients
) -> None:
    org, campaign = make_campaign()
    other = sibling_campaign(db_url, make_campaign, org)
    add_pool(db_url, org, other, "OTHER-POOL-1")
    add_recipients(campaign, 1, S.PROOFED, offer_code="TRAIL-GIVEN")
    sessions = partial(unit_of_work, db_url)
    lines = [
        "code",
        "save10-aaaa",
        "SAVE10-BBBB",
        "save10-aaaa",
        "other-pool-1",
        "trail-given",
        "no",
    ]

    upload = upload_pool(sessions, org, lines, campaign_id=campaign)

    assert upload.added == ["SAVE10-AAAA", "SAVE10-BBBB"]
    assert upload.lines() == [
        "line 4: - duplicate of line 2",
        "line 5: OTHER-POOL-1 - already in campaign " + f"{other}'s pool",
        "line 6: TRAIL-GIVEN - already given to a recipient of the organization",
        "line 7: - a code needs at least 6 characters",
    ]
    with unit_of_work(db_url) as session:
        rows = session.scalars(select(OfferCode).where(OfferCode.code.like("SAVE10-%"))).all()
        assert {(r.code, r.campaign_id, r.organization_id) for r in rows} == {
            ("SAVE10-AAAA", campaign, org),
            ("SAVE10-BBBB", campaign, org),
        }

    again = upload_pool(sessions, org, lines, campaign_id=campaign)

    assert again.added == []
    assert [x.line for x in again.already] == [2, 3]
    assert len(pool(db_url)) == 3, "repeating an upload adds nothing"


def test_an_upload_refuses_an_unknown_organization_or_another_ones_campaign(
    db_url: str, make_campaign
) -> None:
    org, _ = make_campaign()
    _, foreign = make_campaign()
    sessions = partial(unit_of_work, db_url)
    with pytest.raises(UploadRefused, match="no organization 999"):
        upload_pool(sessions, 999, ["SAVE10-AAAA"])
    with pytest.raises(UploadRefused, match=f"campaign {foreign} is not a campaign"):
        upload_pool(sessions, org, ["SAVE10-AAAA"], campaign_id=foreign)
    assert pool(db_url) == {}


def test_the_offer_codes_command(
    db_url: str,
    make_campaign,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("MAIL_PIPELINE_ENV", "test")
    monkeypatch.setenv("MAIL_PIPELINE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("MAIL_PIPELINE_TEST_DATABASE_URL", db_url)
    org, campaign = make_campaign()
    good = tmp_path / "codes.csv"
    good.write_text("Code,Amount\nSPRING-0001,10\nspring-0002,10\n", encoding="utf-8")

    assert main(["offer-codes", str(org), str(good), "--campaign", str(campaign)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"2 codes added to organization {org}'s pool for campaign {campaign}; "
        "0 already there, 0 refused"
    ]
    assert main(["offer-codes", str(org), str(good), "--campaign", str(campaign)]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("0 codes added")

    bad = tmp_path / "bad.txt"
    bad.write_text("WIDE-0001\nwide 0002\n", encoding="utf-8")
    assert main(["offer-codes", str(org), str(bad)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("line 2: - a code holds only letters")
    assert out[1] == (
        f"1 codes added to organization {org}'s pool for every campaign; 0 already there, 1 refused"
    )

    assert main(["offer-codes", "999", str(good)]) == 2
    assert "no organization 999" in capsys.readouterr().err
    assert main(["offer-codes", str(org), str(tmp_path / "missing.txt")]) == 2
    assert pool(db_url) == {"SPRING-0001": None, "SPRING-0002": None, "WIDE-0001": None}
