"""Report building blocks shared by the text, sequence and gene reports and the demo.

A report is a :class:`Page` of :class:`Section` s; a section holds blocks, each already HTML:
:func:`table` (a DataFrame), :func:`figure` (a matplotlib figure, embedded as PNG and optionally
saved next to the page), :func:`image` (a PNG file), :func:`token_heatmap` (a text's words or
tokens coloured by relevance), :func:`logo` (a sequence logo of relevance), :func:`paragraph`,
:func:`link`, and :func:`raw` (trusted HTML from our own renderers). Every user string is escaped
(jinja2 autoescape); pages are self-contained: no script, no CDN, no network. The domain reports
(``report.text``, ``report.sequences``, ``report.genes``) and the demo are built from these.
"""

from __future__ import annotations

import base64
import contextlib
import html
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from markupsafe import Markup

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<style>
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 70em; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.5 }
h1 { font-size: 1.6em } h2 { font-size: 1.25em; border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 2em }
table.frame { border-collapse: collapse; font-size: .85em; margin: .5em 0 1em }
table.frame th, table.frame td { border: 1px solid #ddd; padding: .2em .5em; text-align: right }
table.frame th { background: #f4f4f4 } table.frame td.text { text-align: left }
figure { margin: 1em 0 } figure img { max-width: 100% } figcaption { font-size: .85em; color: #555 }
nav a { margin-right: 1em } .note { color: #555; font-size: .9em }
</style></head>
<body>
<h1>{{ title }}</h1>
{% if intro %}<p>{{ intro }}</p>{% endif %}
{% if sections|length > 1 %}<nav>{% for s in sections %}
<a href="#{{ s.anchor }}">{{ s.title }}</a>{% endfor %}</nav>{% endif %}
{% for s in sections %}
<section id="{{ s.anchor }}"><h2>{{ s.title }}</h2>
{% for block in s.blocks %}{{ block }}
{% endfor %}</section>
{% endfor %}
<p class="note">Made with lrp-domains.</p>
</body></html>
"""


def _environment():
    import jinja2

    return jinja2.Environment(autoescape=True)


@dataclass
class Section:
    """A titled part of a page; ``blocks`` are HTML fragments made by the functions below."""

    title: str
    blocks: list[Markup] = field(default_factory=list)

    @property
    def anchor(self) -> str:
        return "".join(c if c.isalnum() else "-" for c in self.title.lower()).strip("-")

    def add(self, *blocks: Markup) -> Section:
        self.blocks.extend(blocks)
        return self


@dataclass
class Page:
    """A self-contained HTML page of sections."""

    title: str
    sections: list[Section] = field(default_factory=list)
    intro: str = ""

    def section(self, title: str) -> Section:
        """Add and return a new section."""
        created = Section(title)
        self.sections.append(created)
        return created

    def render(self) -> str:
        """The page as HTML."""
        return _environment().from_string(PAGE).render(title=self.title, intro=self.intro, sections=self.sections)

    def write(self, path: str | Path) -> Path:
        """Write the page (UTF-8, atomically: never through a symlink) and return its path."""
        from lrp_domains.files.writing import atomic_write

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        return atomic_write(path, self.render())


def paragraph(text: str, note: bool = False) -> Markup:
    """A paragraph of plain (escaped) text."""
    css = ' class="note"' if note else ""
    return Markup(f"<p{css}>{html.escape(text)}</p>")


def raw(fragment: str) -> Markup:
    """Trusted HTML made by lrp-domains itself."""
    return Markup(fragment)


#: Shown for a missing number (NaN) in a table: a dash, never ``nan``.
MISSING = "\u2013"


def is_p_column(name: Any) -> bool:
    """Whether a column holds p-, q- or E-values (``p``, ``*_p``, ``p_value``, ``*_e``, ...): shown in
    :func:`format_p`'s significant digits rather than fixed decimals (``0.000``)."""
    name = str(name).lower()
    return name in ("p", "q", "e", "pvalue", "qvalue", "evalue") or name.endswith(
        ("_p", "_q", "_e", "p_value", "q_value", "e_value", "_pvalue", "_qvalue", "_evalue")
    )


def format_p(value: float) -> str:
    """A p-value readable at any size: ``3.2e-06``, ``0.012``, ``0.5``; an exact 0 (below double
    precision) as ``< 1e-300``; NaN as a dash."""
    if value != value:
        return MISSING
    if value == 0:
        return "< 1e-300"
    return f"{value:.2g}"


def _text_cell(value: Any) -> str:
    """A text cell, escaped; a comma-separated list (gene names) may wrap after each comma."""
    return html.escape(str(value)).replace(",", ",<wbr>")


def table(frame: pd.DataFrame, max_rows: int = 50, digits: int = 3, caption: str = "") -> Markup:
    """A DataFrame as an HTML table (values escaped, floats rounded, p-value columns in significant
    digits, NaN as a dash, comma-separated lists wrapping after their commas), at most ``max_rows`` rows."""
    shown = frame.head(max_rows)
    head = "".join(f"<th>{html.escape(str(c)).replace('_', '_<wbr>')}</th>" for c in shown.columns)
    p_columns = [is_p_column(c) for c in shown.columns]
    body = []
    for _, row in shown.iterrows():
        cells = []
        for value, p_column in zip(row, p_columns):
            if isinstance(value, float):
                text = format_p(value) if p_column else MISSING if value != value else f"{value:.{digits}f}"
                cells.append(f"<td>{text}</td>")
            else:
                cells.append(f'<td class="text">{_text_cell(value)}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    more = f'<p class="note">{len(frame) - max_rows} more rows in the CSV.</p>' if len(frame) > max_rows else ""
    title = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return Markup(
        f'<table class="frame">{title}<thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>{more}'
    )


@contextlib.contextmanager
def plain_text() -> Iterator[None]:
    """Matplotlib draws every string as plain text inside the block: record ids, gene and class
    names with ``$`` are not parsed as math (which fails on ``$x``)."""
    import matplotlib

    with matplotlib.rc_context({"text.parse_math": False}):
        yield


def figure(fig: Any, caption: str = "", path: str | Path | None = None, dpi: int = 110) -> Markup:
    """A matplotlib figure embedded as a PNG data URI (and saved to ``path`` when given); the
    figure is closed afterwards. Strings are drawn as plain text (see :func:`plain_text`)."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    with plain_text():
        fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    if path is not None:
        from lrp_domains.files.writing import atomic_write

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, buffer.getvalue())
    plt.close(fig)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    alt = html.escape(caption or "figure")
    text = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return Markup(f'<figure><img alt="{alt}" src="data:image/png;base64,{data}">{text}</figure>')


def image(path: str | Path, caption: str = "") -> Markup:
    """A PNG file embedded as a data URI (the page stays self-contained)."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    text = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return Markup(
        f'<figure><img alt="{html.escape(caption or Path(path).name)}" '
        f'src="data:image/png;base64,{data}">{text}</figure>'
    )


def link(href: str, text: str) -> Markup:
    """A relative link (to a page next to this one)."""
    return Markup(f'<p><a href="{html.escape(href, quote=True)}">{html.escape(text)}</a></p>')


def token_heatmap(explanation: Any, level: str = "word") -> Markup:
    """A text explanation's words (or tokens) on red (positive) / blue (negative) backgrounds,
    values on hover, with the prediction. Every string is escaped."""
    values = explanation.word_relevance if level == "word" else explanation.token_relevance
    spans = explanation.word_spans if level == "word" else explanation.token_spans
    text = explanation.text
    scale = float(values.abs().max()) if len(values) else 0.0
    pieces, cursor = [], 0
    for (start, end), value in zip(spans, values.tolist()):
        if end <= start:
            continue
        pieces.append(html.escape(text[cursor:start]))
        alpha = 0.0 if scale == 0 else min(abs(value) / scale, 1.0)
        color = f"rgba(220, 40, 40, {alpha:.3f})" if value >= 0 else f"rgba(40, 90, 220, {alpha:.3f})"
        pieces.append(
            f'<span style="background:{color};border-radius:3px;padding:0 1px" '
            f'title="{value:+.4f}">{html.escape(text[start:end])}</span>'
        )
        cursor = end
    pieces.append(html.escape(text[cursor:]))
    probabilities = ", ".join(f"{html.escape(k)} {v:.3f}" for k, v in explanation.probabilities.items())
    target = "" if explanation.target is None else f" &middot; explained: {html.escape(str(explanation.target))}"
    truncated = (
        f" &middot; {explanation.truncated} tokens past the model's length not explained"
        if getattr(explanation, "truncated", 0)
        else ""
    )
    return Markup(
        '<div class="lrp-text" style="font-family:sans-serif;line-height:1.8">'
        f'<div style="font-size:90%;color:#444">prediction: <b>{html.escape(explanation.prediction)}</b> '
        f"({probabilities}){target} &middot; {html.escape(explanation.composite)}{truncated}</div>"
        f"<div>{''.join(pieces)}</div></div>"
    )


def logo(
    explanation: Any,
    index: int,
    start: int | None = None,
    end: int | None = None,
    caption: str = "",
    path: str | Path | None = None,
) -> Markup:
    """A sequence logo of one sequence's relevance (``lrp_domains.bio.plot_logo``) as a figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lrp_domains.bio.motifs.seqlets import plot_logo

    width = (end or explanation.lengths[index]) - (start or 0)
    with plain_text():
        fig, ax = plt.subplots(figsize=(max(4, width / 7), 1.9))
        plot_logo(explanation, index, start, end, ax=ax)
        return figure(fig, caption, path)
