"""The 30-day trend as inline SVG, drawn on the server (no script, no fonts to fetch)."""

from __future__ import annotations

from html import escape

from mailbot.reports import TrendDay

WIDTH, HEIGHT, PAD = 600, 160, 24


def trend_chart(days: list[TrendDay]) -> str:
    """Bars of tickets created per day and a line of tickets resolved; escaped text only."""
    top = max([1, *(d.created for d in days), *(d.resolved for d in days)])
    step = (WIDTH - 2 * PAD) / max(len(days), 1)
    scale = (HEIGHT - 2 * PAD) / top
    bars, points = [], []
    for i, d in enumerate(days):
        x = PAD + i * step
        h = d.created * scale
        bars.append(
            f'<rect x="{x + 1:.1f}" y="{HEIGHT - PAD - h:.1f}" width="{max(step - 2, 1):.1f}" '
            f'height="{h:.1f}" fill="#8fb3de"><title>{escape(d.day)}: {d.created} created, '
            f"{d.resolved} resolved</title></rect>"
        )
        points.append(f"{x + step / 2:.1f},{HEIGHT - PAD - d.resolved * scale:.1f}")
    first = escape(days[0].day) if days else ""
    last = escape(days[-1].day) if days else ""
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="Tickets per day, 30 days">'
        f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}" '
        f'stroke="#444"/>{"".join(bars)}'
        f'<polyline points="{" ".join(points)}" fill="none" stroke="#2a7a2a" stroke-width="2"/>'
        f'<text x="{PAD}" y="{HEIGHT - 6}" font-size="10" fill="#444">{first}</text>'
        f'<text x="{WIDTH - PAD}" y="{HEIGHT - 6}" font-size="10" fill="#444" '
        f'text-anchor="end">{last}</text>'
        f'<text x="{PAD}" y="14" font-size="10" fill="#444">max {top}/day</text></svg>'
    )
