"""The brand report as people read it (``services.report_rendering``): charts that decode,
HTML that shows the figures and escapes what it is given, an email whose images are where
its HTML says."""

from __future__ import annotations

import base64
import io
import re
from datetime import date, timedelta
from email.message import EmailMessage
from importlib import resources
from typing import Any

import pandas as pd
import pytest
from PIL import Image

from mail_pipeline.domain.metrics import MATCH_TYPES, Verdict
from mail_pipeline.domain.reports import (
    COMPARED_FIGURES,
    CampaignLift,
    ReportFigures,
    bfcm_day,
    previous,
    report_figures,
    week_ending,
)
from mail_pipeline.services.report_rendering import (
    CHART_DISPLAY,
    CHART_PIXELS,
    FIGURE_LABELS,
    UNKNOWN,
    cumulative_roas,
    format_lift,
    format_money,
    format_percent,
    report_charts,
    report_email,
    report_subject,
    report_text,
    standalone_html,
)

FRIDAY = date(2026, 11, 27)
ORG = 7
HOSTILE = "<script>alert('x')</script> & Co"


def order_row(day: date, currency: str, **figures: int) -> dict[str, Any]:
    row: dict[str, Any] = {
        "day": day,
        "organization_id": ORG,
        "campaign_id": 11,
        "currency": currency,
        "orders": 1,
    }
    for method in MATCH_TYPES:
        row[f"{method}_orders"] = 0
        row[f"{method}_revenue_minor"] = 0
    return row | figures


@pytest.fixture(scope="module")
def figures() -> ReportFigures:
    """A week: 1,234 postcards sent, 3 attributed orders for USD 1,234.56 on USD 200.00 of
    spend (ROAS 6.17), GBP on the side, a previous week to compare with."""
    week = week_ending(FRIDAY)
    before = previous(week)
    orders = pd.DataFrame(
        [
            order_row(FRIDAY, "USD", offer_code_orders=2, offer_code_revenue_minor=100_000),
            order_row(
                FRIDAY - timedelta(days=2), "USD", email_orders=1, email_revenue_minor=23_456
            ),
            order_row(FRIDAY, "GBP", address_orders=1, address_revenue_minor=5_000),
            order_row(before.last, "USD", email_orders=1, email_revenue_minor=10_000),
        ]
    )
    recipients = pd.DataFrame(
        [
            {"day": day, "organization_id": ORG, "campaign_id": 11, "mailed": mailed}
            | {"delivered": mailed // 2, "returned": 0}
            for day, mailed in zip(week.days, [200, 0, 300, 234, 100, 200, 200], strict=True)
        ]
        + [
            {"day": before.first, "organization_id": ORG, "campaign_id": 11, "mailed": 1000}
            | {"delivered": 0, "returned": 0}
        ]
    )
    spend = pd.DataFrame(
        [
            {"day": week.first, "organization_id": ORG, "campaign_id": 11, "currency": "USD"}
            | {"postcards": 1234, "spend_minor": 20_000},
            {"day": before.first, "organization_id": ORG, "campaign_id": 11, "currency": "USD"}
            | {"postcards": 1000, "spend_minor": 16_000},
        ]
    )
    results = pd.DataFrame(
        [
            {
                "campaign_id": 11,
                "organization_id": ORG,
                "mailed_recipients": 4000,
                "holdout_recipients": 400,
                "mailed_rate": 0.0315,
                "holdout_rate": 0.02,
                "lift": 0.0115,
                "lift_low": 0.0021,
                "lift_high": 0.0209,
                "verdict": "lift",
                "verdict_reason": None,
            }
        ]
    )
    return report_figures(orders, recipients, spend, results, week, before)


@pytest.fixture(scope="module")
def email(figures: ReportFigures) -> EmailMessage:
    return report_email(
        figures,
        HOSTILE,
        sender="Reports <reports@example.com>",
        to=["owner@brand.example", "csm@example.com"],
        campaign_names={11: "Win-back <b>"},
    )


def test_the_figures_of_the_fixture(figures: ReportFigures) -> None:
    assert (figures.current.sent, figures.current.attributed_orders) == (1234, 3)
    assert figures.current.attributed_revenue_minor == 123_456
    assert [o.currency for o in figures.other_currencies] == ["GBP"]


def test_charts_are_pngs_of_the_expected_size_and_the_same_bytes_each_time(
    figures: ReportFigures,
) -> None:
    charts = report_charts(figures)
    assert [c.name for c in charts] == ["mailed_delivered", "revenue", "cumulative_roas"]
    for chart in charts:
        image = Image.open(io.BytesIO(chart.png))
        assert (image.format, image.size) == ("PNG", CHART_PIXELS)
        image.load()
    assert [c.png for c in report_charts(figures)] == [c.png for c in charts]


def test_charts_of_an_empty_period_and_of_a_bfcm_day() -> None:
    empty = pd.DataFrame()
    day = bfcm_day(date(2026, 11, 30))
    figures = report_figures(empty, empty, empty, empty, day, previous(day))
    charts = report_charts(figures)
    for chart in charts:
        assert Image.open(io.BytesIO(chart.png)).size == CHART_PIXELS
    assert cumulative_roas(figures) == [None] * 7


def test_drawing_charts_leaves_pyplot_alone(figures: ReportFigures) -> None:
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    report_charts(figures)
    assert plt.get_fignums() == before


def test_the_cumulative_roas_starts_with_the_first_spend(figures: ReportFigures) -> None:
    roas = cumulative_roas(figures)
    assert roas[0] == 0.0  # spend on Saturday, no revenue yet
    assert roas[-1] == pytest.approx(123_456 / 20_000)


def test_the_standalone_html_shows_the_headline_and_escapes_the_brand(
    figures: ReportFigures,
) -> None:
    charts = report_charts(figures)
    html = standalone_html(figures, HOSTILE, charts=charts, campaign_names={11: "Win-back <b>"})
    for text in ("1,234", "USD 1,234.56", "USD 200.00", "6.17", "week ending Fri 27 Nov 2026"):
        assert text in html, text
    assert "<script>" not in html and "<b>" not in html
    assert "&lt;script&gt;" in html and "&amp; Co" in html and "Win-back &lt;b&gt;" in html
    assert "GBP 50.00" in html  # the other currency, listed
    assert "+1.15 pts (95% interval +0.21 to +2.09 pts)" in html
    assert "Postcards lifted conversions" in html
    sources = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert [base64.b64decode(s) for s in sources] == [c.png for c in charts]
    assert f'width="{CHART_DISPLAY[0]}"' in html


def test_the_email_holds_a_text_part_and_the_html_with_its_charts_inline(
    email: EmailMessage,
) -> None:
    assert email.get_content_type() == "multipart/alternative"
    assert email["Subject"] == f"{HOSTILE}: your postcards, week ending Fri 27 Nov 2026"
    assert email["From"] == "Reports <reports@example.com>"
    assert email["To"] == "owner@brand.example, csm@example.com"

    text, related = email.iter_parts()
    assert text.get_content_type() == "text/plain"
    body = text.get_content()
    assert HOSTILE in body and "USD 1,234.56" in body and "&lt;" not in body

    assert related.get_content_type() == "multipart/related"
    html_part, *images = related.iter_parts()
    html = html_part.get_content()
    assert html_part.get_content_type() == "text/html"
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert [image.get_content_type() for image in images] == ["image/png"] * 3
    ids = [image["Content-ID"] for image in images]
    assert len(set(ids)) == 3
    referenced = re.findall(r'src="cid:([^"]+)"', html)
    assert referenced == [content_id.strip("<>") for content_id in ids]
    for image in images:
        assert Image.open(io.BytesIO(image.get_content())).size == CHART_PIXELS
        assert image.get_content_disposition() == "inline"


def test_a_subject_stays_on_one_line() -> None:
    subject = report_subject("Acme\r\nBcc: someone@example.com", week_ending(FRIDAY))
    assert "\n" not in subject and "\r" not in subject
    assert subject.startswith("Acme Bcc: someone@example.com: your postcards")


def test_unknown_values_are_a_dash(figures: ReportFigures) -> None:
    assert format_money(None, "USD") == UNKNOWN
    assert format_money(1234, None) == UNKNOWN
    assert format_money(-1234, "USD", signed=True) == "-USD 12.34"
    assert format_money(150, "JPY") == "JPY 150"
    assert format_percent(None) == UNKNOWN and format_percent(12.345) == "+12.3%"
    no_lift = CampaignLift(11, 40, 0, 0.1, None, None, None, None, Verdict.NO_HOLDOUT, "none")
    assert format_lift(no_lift) == UNKNOWN
    text = report_text(figures, "Acme")
    # Delivered rose from nothing: a change, but no percent of it.
    assert f"Delivered: 617 (the previous week: 0; change +617, {UNKNOWN})" in text


def test_every_compared_figure_has_a_label() -> None:
    assert set(FIGURE_LABELS) == set(COMPARED_FIGURES)


def test_the_templates_are_in_the_package() -> None:
    folder = resources.files("mail_pipeline") / "templates" / "reports"
    assert (folder / "report.html").is_file() and (folder / "report.txt").is_file()


def test_postcards_without_a_price_are_counted_and_said_to_be_left_out_of_the_spend() -> None:
    week = week_ending(FRIDAY)
    recipients = pd.DataFrame(
        [
            {"day": week.first, "organization_id": ORG, "campaign_id": 11, "mailed": 40}
            | {"delivered": 0, "returned": 0, "unpriced_postcards": 25}
        ]
    )
    empty = pd.DataFrame()
    figures = report_figures(empty, recipients, empty, empty, week, previous(week))
    assert figures.current.unpriced_postcards == 25
    assert figures.current.cpa_minor is None  # no spend known: not "0.00" an order
    assert figures.previous.unpriced_postcards == 0
    note = "25 postcards of this period were not priced by their printer"
    assert note in report_text(figures, "Brand")
    assert note in standalone_html(figures, "Brand")
    priced = report_figures(
        empty, recipients.drop(columns="unpriced_postcards"), empty, empty, week, previous(week)
    )
    assert "not priced" not in report_text(priced, "Brand")
