"""Small server-rendered SVG charts (no JavaScript): one bar per day.

The numbers come from the database (`daily_series`); `bar_chart` draws them with a
title, a y maximum and date labels, and a text alternative for screen readers.
"""

from __future__ import annotations

import datetime as dt
from html import escape

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from pipeline.store.schema import deliveries, subscribers
from pipeline.timeutil import utcnow


def _days(n: int) -> list[dt.date]:
    today = utcnow().date()
    return [today - dt.timedelta(days=i) for i in range(n - 1, -1, -1)]


def _by_day(conn: Connection, column, where, days: list[dt.date]) -> list[int]:
    since = dt.datetime.combine(days[0], dt.time(), dt.UTC)
    counts = {d: 0 for d in days}
    for (when,) in conn.execute(select(column).where(where, column >= since)):
        if when is not None and when.date() in counts:
            counts[when.date()] += 1
    return [counts[d] for d in days]


def daily_series(conn: Connection, days: int = 30) -> dict[str, tuple[list[dt.date], list[int]]]:
    """Subscribers over time (confirmed, cumulative), sends per day, failures per day."""
    ds = _days(days)
    since = dt.datetime.combine(ds[0], dt.time(), dt.UTC)
    before = conn.execute(
        select(func.count())
        .select_from(subscribers)
        .where(subscribers.c.confirmed_at.is_not(None), subscribers.c.confirmed_at < since)
    ).scalar_one()
    new = _by_day(conn, subscribers.c.confirmed_at, subscribers.c.confirmed_at.is_not(None), ds)
    total, running = [], before
    for n in new:
        running += n
        total.append(running)
    sent = _by_day(conn, deliveries.c.sent_at, deliveries.c.state == "sent", ds)
    failed = _by_day(conn, deliveries.c.updated_at, deliveries.c.state.in_(("failed", "dead")), ds)
    return {"subscribers": (ds, total), "sends": (ds, sent), "failures": (ds, failed)}


def bar_chart(
    title: str, days: list[dt.date], values: list[int], *, color: str = "#0b5394", width: int = 600, height: int = 160
) -> str:
    top = max(values) if values and max(values) > 0 else 1
    pad_l, pad_b, pad_t = 40, 22, 22
    plot_w, plot_h = width - pad_l - 8, height - pad_b - pad_t
    step = plot_w / max(1, len(values))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(title)}: {escape(_summary(days, values))}" class="chart">',
        f"<title>{escape(title)}</title>",
        f'<text x="{pad_l}" y="14" font-size="13" font-weight="600">{escape(title)}</text>',
        f'<text x="{pad_l - 4}" y="{pad_t + 10}" font-size="11" text-anchor="end">{top}</text>',
        f'<text x="{pad_l - 4}" y="{pad_t + plot_h}" font-size="11" text-anchor="end">0</text>',
        f'<line x1="{pad_l}" y1="{pad_t + plot_h}" x2="{width - 8}" y2="{pad_t + plot_h}" stroke="#767676"/>',
    ]
    for i, (day, v) in enumerate(zip(days, values)):
        h = plot_h * v / top
        x = pad_l + i * step + 1
        parts.append(
            f'<rect x="{x:.1f}" y="{pad_t + plot_h - h:.1f}" width="{max(1.0, step - 2):.1f}" '
            f'height="{h:.1f}" fill="{color}"><title>{day.isoformat()}: {v}</title></rect>'
        )
    if days:
        parts.append(f'<text x="{pad_l}" y="{height - 6}" font-size="11">{days[0].isoformat()}</text>')
        parts.append(
            f'<text x="{width - 8}" y="{height - 6}" font-size="11" text-anchor="end">{days[-1].isoformat()}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _summary(days: list[dt.date], values: list[int]) -> str:
    if not days:
        return "no data"
    return f"{values[-1]} on {days[-1].isoformat()}, at most {max(values)} a day over {len(days)} days"


def category_chart(
    title: str, labels: list[str], values: list[int], *, color: str = "#0b5394", width: int = 600, row: int = 22
) -> str:
    """Horizontal bars, one per label (clicks per article in an edition report), with
    the value at the end of each bar and a text alternative."""
    top = max(values) if values and max(values) > 0 else 1
    label_w, pad_t = 240, 24
    plot_w = width - label_w - 48
    height = pad_t + row * max(1, len(values)) + 8
    summary = "; ".join(f"{lbl}: {v}" for lbl, v in zip(labels, values)) or "no data"
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(title)}: {escape(summary)}" class="chart">',
        f"<title>{escape(title)}</title>",
        f'<text x="0" y="14" font-size="13" font-weight="600">{escape(title)}</text>',
    ]
    for i, (label, v) in enumerate(zip(labels, values)):
        y = pad_t + i * row
        w = plot_w * v / top
        short = label if len(label) <= 34 else label[:33] + "…"
        parts.append(
            f'<text x="{label_w - 6}" y="{y + 15}" font-size="12" text-anchor="end">{escape(short)}</text>'
            f'<rect x="{label_w}" y="{y + 3}" width="{max(w, 0.0):.1f}" height="{row - 6}" fill="{color}">'
            f"<title>{escape(label)}: {v}</title></rect>"
            f'<text x="{label_w + w + 4:.1f}" y="{y + 15}" font-size="12">{v}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
