"""A brand report as people read it: charts (PNG), an HTML email with a plain-text
alternative, and a standalone HTML page. Pure functions of ``domain.reports.ReportFigures``:
no database, no network, no Dagster; the same figures give the same bytes.

Charts are drawn with matplotlib's Agg canvas on a ``Figure`` of their own (never pyplot, so
no global state is touched and rendering is safe in threads), :data:`CHART_PIXELS` each:
twice the :data:`CHART_DISPLAY` size the HTML shows them at, for sharp text on high-density
screens at the 640 px width of an email. The PNGs carry no "Software" text, so their bytes
depend on the figures and matplotlib's version only.

The HTML is rendered by jinja2 from ``mail_pipeline/templates/reports/`` with autoescaping
on: the brand's name, campaign names and every other text are escaped. The email
(:func:`report_email`) is ``multipart/alternative``: the plain text, then a
``multipart/related`` holding the HTML and the charts it shows by ``cid:``.
:func:`standalone_html` is the same page with the charts inline as ``data:`` URIs.

Money is written with ``domain.metrics.major_units`` after the currency's code
(``USD 1,234.56``), unknown values as an em dash, changes with their sign and percent.
"""

from __future__ import annotations

import base64
import functools
import io
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any

import jinja2

from mail_pipeline.domain.metrics import Verdict, major_units
from mail_pipeline.domain.money import exponent
from mail_pipeline.domain.reports import (
    CampaignLift,
    ReportFigures,
    ReportKind,
    ReportPeriod,
)

#: How the HTML shows each chart (CSS pixels)...
CHART_DISPLAY = (640, 320)
#: ...and the PNG's pixels: twice as many, for high-density screens.
CHART_SCALE = 2
CHART_PIXELS = (CHART_DISPLAY[0] * CHART_SCALE, CHART_DISPLAY[1] * CHART_SCALE)
#: Matplotlib's resolution: the figure is CHART_DISPLAY / 100 inches at 100 * scale dpi.
CHART_DPI = 100 * CHART_SCALE

#: The domain of the charts' Content-IDs (only needs to make them unique in a message).
CONTENT_ID_DOMAIN = "reports.mail-pipeline.invalid"

UNKNOWN = "\N{EM DASH}"

COLORS = {
    "mailed": "#1f4e79",
    "delivered": "#7fb3d5",
    "revenue": "#2e8b57",
    "roas": "#c0392b",
    "grid": "#dddddd",
    "text": "#333333",
}

#: Each compared figure: its label and how it is written.
FIGURE_LABELS: dict[str, tuple[str, str]] = {
    "sent": ("Postcards sent", "count"),
    "delivered": ("Delivered", "count"),
    "returned": ("Returned", "count"),
    "offer_code_orders": ("Orders with an offer code", "count"),
    "matched_orders": ("Orders matched (email and address)", "count"),
    "attributed_orders": ("Attributed orders", "count"),
    "offer_code_revenue_minor": ("Revenue with an offer code", "money"),
    "matched_revenue_minor": ("Revenue matched (email and address)", "money"),
    "attributed_revenue_minor": ("Attributed revenue", "money"),
    "spend_minor": ("Spend", "money"),
    "cpa_minor": ("Cost per order (CPA)", "money"),
    "roas": ("Return on ad spend (ROAS)", "ratio"),
}

#: The figures a report shows in bold: its headline.
HEADLINE = frozenset({"sent", "attributed_orders", "attributed_revenue_minor", "roas"})

VERDICT_LABELS = {
    Verdict.LIFT: "Postcards lifted conversions",
    Verdict.NO_DETECTABLE_LIFT: "No detectable lift",
    Verdict.NEGATIVE: "Lower than the holdout",
    Verdict.TOO_FEW: "Too few to tell yet",
    Verdict.NO_HOLDOUT: "No holdout group",
}


# --- words and numbers ------------------------------------------------------------------------


def format_count(value: float | None, *, signed: bool = False) -> str:
    if value is None:
        return UNKNOWN
    return f"{value:+,.0f}" if signed else f"{value:,.0f}"


def format_money(minor: float | None, currency: str | None, *, signed: bool = False) -> str:
    """``USD 1,234.56`` (``+USD 12.00`` when signed); a dash without an amount or currency."""
    if minor is None or currency is None:
        return UNKNOWN
    sign = ("+" if minor >= 0 else "-") if signed else ("-" if minor < 0 else "")
    return f"{sign}{currency} {major_units(abs(minor), currency)}"


def format_ratio(value: float | None, *, signed: bool = False) -> str:
    if value is None:
        return UNKNOWN
    return f"{value:+.2f}" if signed else f"{value:.2f}\N{MULTIPLICATION SIGN}"


def format_percent(value: float | None) -> str:
    """A change in percent, with its sign: ``+12.5%``."""
    return UNKNOWN if value is None else f"{value:+,.1f}%"


def format_rate(value: float | None) -> str:
    """A conversion rate (a proportion) in percent: ``2.35%``."""
    return UNKNOWN if value is None else f"{value * 100:.2f}%"


def format_points(value: float | None) -> str:
    """A difference of rates in percentage points: ``+0.35 pts``."""
    return UNKNOWN if value is None else f"{value * 100:+.2f} pts"


def format_lift(lift: CampaignLift) -> str:
    """The lift with its interval: ``+0.35 pts (95% interval +0.10 to +0.60 pts)``."""
    if lift.lift is None:
        return UNKNOWN
    if lift.low is None or lift.high is None:
        return format_points(lift.lift)
    return (
        f"{format_points(lift.lift)} (95% interval {lift.low * 100:+.2f} to "
        f"{format_points(lift.high)})"
    )


def format_day(day: date) -> str:
    """``Fri 27 Nov 2026``."""
    return f"{day:%a} {day.day} {day:%b %Y}"


def _figure_text(figure: str, value: float | None, currency: str | None, signed: bool) -> str:
    kind = FIGURE_LABELS[figure][1]
    if kind == "money":
        return format_money(value, currency, signed=signed)
    if kind == "ratio":
        return format_ratio(value, signed=signed)
    return format_count(value, signed=signed)


def period_phrase(period: ReportPeriod) -> str:
    """What a report covers, in words: ``week ending Fri 27 Nov 2026``."""
    if period.kind == ReportKind.BFCM:
        return f"Black Friday / Cyber Monday, {format_day(period.last)}"
    weeks = "two weeks" if period.kind == ReportKind.BIWEEKLY else "week"
    return f"{weeks} ending {format_day(period.last)}"


def previous_phrase(period: ReportPeriod) -> str:
    return {
        ReportKind.WEEKLY: "previous week",
        ReportKind.BIWEEKLY: "previous two weeks",
        ReportKind.BFCM: "previous day",
    }[period.kind]


def _one_line(text: str) -> str:
    return " ".join(text.split())


def report_subject(brand: str, period: ReportPeriod) -> str:
    """``<Brand>: your postcards, week ending Fri 27 Nov 2026`` (on one line whatever the
    brand's name holds)."""
    return f"{_one_line(brand)}: your postcards, {period_phrase(period)}"


# --- charts -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReportChart:
    """One chart: ``name`` is its file stem and Content-ID's, ``title`` its alt text."""

    name: str
    title: str
    png: bytes


def _major(minor: int | float, currency: str | None) -> float:
    return minor / 10 ** exponent(currency) if currency else float(minor)


def _draw(title: str, draw: Callable[[Any], None]) -> bytes:
    """A PNG of :data:`CHART_PIXELS` of one axes drawn by ``draw``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(
        figsize=(CHART_DISPLAY[0] / 100, CHART_DISPLAY[1] / 100),
        dpi=CHART_DPI,
        layout="constrained",
    )
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.set_title(title, loc="left", fontsize=13, color=COLORS["text"])
    axes.spines[["top", "right"]].set_visible(False)
    axes.grid(axis="y", color=COLORS["grid"], linewidth=0.6)
    axes.set_axisbelow(True)
    axes.tick_params(labelsize=10, colors=COLORS["text"])
    draw(axes)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=CHART_DPI, metadata={"Software": None})
    return buffer.getvalue()


def _day_ticks(axes: Any, days: Sequence[date]) -> None:
    axes.set_xticks(range(len(days)), [f"{day:%a}\n{day.day}" for day in days])
    axes.set_xlim(-0.6, len(days) - 0.4)


def mailed_delivered_chart(figures: ReportFigures) -> bytes:
    """Postcards mailed and delivered, per day: bars side by side."""
    from matplotlib.ticker import MaxNLocator

    days = [d.day for d in figures.daily]

    def draw(axes: Any) -> None:
        width = 0.4
        xs = range(len(days))
        axes.bar(
            [x - width / 2 for x in xs],
            [d.mailed for d in figures.daily],
            width,
            label="Mailed",
            color=COLORS["mailed"],
        )
        axes.bar(
            [x + width / 2 for x in xs],
            [d.delivered for d in figures.daily],
            width,
            label="Delivered",
            color=COLORS["delivered"],
        )
        _day_ticks(axes, days)
        axes.yaxis.set_major_locator(MaxNLocator(integer=True))
        highest = max([1, *(max(d.mailed, d.delivered) for d in figures.daily)])
        axes.set_ylim(bottom=0, top=highest * 1.05)
        axes.legend(fontsize=10, frameon=False, loc="lower right", bbox_to_anchor=(1, 1), ncols=2)

    return _draw("Postcards mailed and delivered", draw)


def revenue_chart(figures: ReportFigures) -> bytes:
    """Attributed revenue per day, in the report's currency."""
    from matplotlib.ticker import FuncFormatter

    days = [d.day for d in figures.daily]
    currency = figures.currency

    def draw(axes: Any) -> None:
        values = [_major(d.attributed_revenue_minor, currency) for d in figures.daily]
        axes.bar(range(len(days)), values, 0.6, color=COLORS["revenue"])
        _day_ticks(axes, days)
        top = max(values, default=0.0)
        if top <= 0:
            # Nothing attributed yet: say so, with a plain 0 axis (integer ticks of a 0..1
            # axis would read 0, 0, 0, 1, 1, 1).
            axes.set_ylim(bottom=0, top=1)
            axes.set_yticks([0])
            axes.text(0.5, 0.5, "No attributed revenue yet", transform=axes.transAxes, ha="center")
        else:
            axes.set_ylim(bottom=0, top=top * 1.05)
        decimals = 0 if top >= 10 else 2
        axes.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.{decimals}f}"))
        axes.set_ylabel(currency or "", fontsize=10, color=COLORS["text"])

    return _draw("Attributed revenue per day", draw)


def cumulative_roas(figures: ReportFigures) -> list[float | None]:
    """Attributed revenue over spend from the first chart day through each day; ``None``
    until there is spend."""
    out: list[float | None] = []
    revenue = spend = 0
    for day in figures.daily:
        revenue += day.attributed_revenue_minor
        spend += day.spend_minor
        out.append(revenue / spend if spend else None)
    return out


def cumulative_roas_chart(figures: ReportFigures) -> bytes:
    """Return on ad spend accumulated day by day, with the break-even line at 1."""
    days = [d.day for d in figures.daily]
    values = cumulative_roas(figures)

    def draw(axes: Any) -> None:
        ys = [math.nan if v is None else v for v in values]
        axes.axhline(1.0, color=COLORS["text"], linewidth=0.8, linestyle="--")
        axes.annotate("break-even", (len(days) - 0.5, 1.0), fontsize=9, ha="right", va="bottom")
        axes.plot(range(len(days)), ys, marker="o", markersize=4, color=COLORS["roas"])
        _day_ticks(axes, days)
        known = [v for v in values if v is not None]
        axes.set_ylim(bottom=0, top=max([1.5, *known]) * 1.1)
        if not known:
            axes.text(0.5, 0.5, "No spend yet", transform=axes.transAxes, ha="center")

    return _draw("Return on ad spend, cumulative", draw)


def report_charts(figures: ReportFigures) -> tuple[ReportChart, ...]:
    """The report's charts, in the order the email shows them."""
    return (
        ReportChart(
            "mailed_delivered",
            "Postcards mailed and delivered per day",
            mailed_delivered_chart(figures),
        ),
        ReportChart("revenue", "Attributed revenue per day", revenue_chart(figures)),
        ReportChart(
            "cumulative_roas", "Return on ad spend, cumulative", cumulative_roas_chart(figures)
        ),
    )


# --- HTML, text, email ------------------------------------------------------------------------


@functools.cache
def _templates() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("mail_pipeline", "templates/reports"),
        autoescape=jinja2.select_autoescape(
            enabled_extensions=("html",), disabled_extensions=("txt",), default=True
        ),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def _view(
    figures: ReportFigures,
    brand: str,
    campaign_names: Mapping[int, str] | None,
    chart_sources: Sequence[tuple[ReportChart, str]],
) -> dict[str, Any]:
    """What the templates show, every value already written as text."""
    currency = figures.currency
    rows = []
    for change in figures.changes:
        percent = format_percent(change.percent)
        delta = _figure_text(change.figure, change.delta, currency, signed=True)
        rows.append(
            {
                "label": FIGURE_LABELS[change.figure][0],
                "headline": change.figure in HEADLINE,
                "current": _figure_text(change.figure, change.current, currency, False),
                "previous": _figure_text(change.figure, change.previous, currency, False),
                "delta": delta,
                "percent": percent,
            }
        )
    names = campaign_names or {}
    lifts = [
        {
            "campaign": names.get(lift.campaign_id, f"Campaign {lift.campaign_id}"),
            "mailed": f"{format_rate(lift.mailed_rate)} of {lift.mailed_recipients:,}",
            "holdout": f"{format_rate(lift.holdout_rate)} of {lift.holdout_recipients:,}",
            "lift": format_lift(lift),
            "verdict": VERDICT_LABELS[lift.verdict],
            # The reason repeats the verdict's words ("too few to tell: ...").
            "reason": (lift.reason or "").removeprefix("too few to tell: ") or None,
        }
        for lift in figures.lifts
    ]
    others = [
        {
            "currency": other.currency,
            "orders": format_count(other.attributed_orders),
            "revenue": format_money(other.attributed_revenue_minor, other.currency),
            "spend": format_money(other.spend_minor, other.currency),
        }
        for other in figures.other_currencies
    ]
    current = figures.current
    return {
        "brand": brand,
        "subject": report_subject(brand, figures.period),
        "period": period_phrase(figures.period),
        "first_day": format_day(figures.period.first),
        "last_day": format_day(figures.period.last),
        "previous": previous_phrase(figures.period),
        "currency": currency,
        "unpriced": format_count(current.unpriced_postcards)
        if current.unpriced_postcards
        else None,
        "headline": {
            "sent": format_count(current.sent),
            "orders": format_count(current.attributed_orders),
            "revenue": format_money(current.attributed_revenue_minor, currency),
            "roas": format_ratio(current.roas),
        },
        "rows": rows,
        "others": others,
        "lifts": lifts,
        "charts": [
            {
                "src": source,
                "title": chart.title,
                "width": CHART_DISPLAY[0],
                "height": CHART_DISPLAY[1],
            }
            for chart, source in chart_sources
        ],
    }


def report_text(
    figures: ReportFigures, brand: str, *, campaign_names: Mapping[int, str] | None = None
) -> str:
    """The report as plain text (the email's alternative to the HTML)."""
    return _templates().get_template("report.txt").render(_view(figures, brand, campaign_names, ()))


def report_html(
    figures: ReportFigures,
    brand: str,
    chart_sources: Sequence[tuple[ReportChart, str]],
    *,
    campaign_names: Mapping[int, str] | None = None,
) -> str:
    """The report's HTML, each chart shown from its source (a ``cid:`` or ``data:`` URI)."""
    return (
        _templates()
        .get_template("report.html")
        .render(_view(figures, brand, campaign_names, chart_sources))
    )


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def standalone_html(
    figures: ReportFigures,
    brand: str,
    *,
    charts: Sequence[ReportChart] | None = None,
    campaign_names: Mapping[int, str] | None = None,
) -> str:
    """The report as one HTML file, its charts inline as ``data:`` URIs (to keep beside the
    PNGs, or attach to a materialization). ``charts``: from :func:`report_charts`, drawn
    here if not given."""
    charts = report_charts(figures) if charts is None else charts
    sources = [(chart, data_uri(chart.png)) for chart in charts]
    return report_html(figures, brand, sources, campaign_names=campaign_names)


def report_email(
    figures: ReportFigures,
    brand: str,
    *,
    sender: str,
    to: str | Sequence[str],
    charts: Sequence[ReportChart] | None = None,
    campaign_names: Mapping[int, str] | None = None,
) -> EmailMessage:
    """The report email: ``multipart/alternative`` of the plain text and a
    ``multipart/related`` of the HTML with its charts inline (``cid:``). Building it sends
    nothing."""
    charts = report_charts(figures) if charts is None else charts
    content_ids = {
        chart.name: make_msgid(idstring=chart.name, domain=CONTENT_ID_DOMAIN) for chart in charts
    }
    sources = [(chart, "cid:" + content_ids[chart.name][1:-1]) for chart in charts]
    message = EmailMessage()
    message["Subject"] = report_subject(brand, figures.period)
    message["From"] = sender
    message["To"] = to if isinstance(to, str) else ", ".join(to)
    message.set_content(report_text(figures, brand, campaign_names=campaign_names))
    message.add_alternative(
        report_html(figures, brand, sources, campaign_names=campaign_names), subtype="html"
    )
    html_part = message.get_body(preferencelist=("html",))
    assert html_part is not None
    for chart in charts:
        html_part.add_related(
            chart.png,
            maintype="image",
            subtype="png",
            cid=content_ids[chart.name],
            filename=f"{chart.name}.png",
            disposition="inline",
        )
    return message
