"""The report's files: one PNG per figure and one self-contained HTML page (the same PNGs embedded as
base64 ``data:`` URIs, so the page can be mailed or opened anywhere), plus the table as Markdown."""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sparsecl.fileio import atomic_write
from sparsecl.report.figures import RUN_FIGURES, compare_figure
from sparsecl.report.runs import Inputs
from sparsecl.report.table import markdown, settings, table_rows, to_html

STYLE = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
         "img{max-width:100%;height:auto;display:block;margin:.5em 0 1.5em}"
         "table{border-collapse:collapse;font-size:14px}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
         "td:first-child,th:first-child,td:nth-child(2){text-align:left}")


@dataclass
class Figure:
    """A rendered figure: its file name, caption and the matplotlib object (kept for tests)."""

    name: str
    caption: str
    figure: Any
    png: bytes = b""


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text).strip("-") or "run"


def render(inputs: Inputs) -> tuple[list[tuple[str, list[Figure]]], list[dict[str, Any]]]:
    """Sections of figures (a comparison section when there are 2+ settings, one per single run) and the
    table rows."""
    rows, labels = settings(inputs.all)
    entries = table_rows(rows, labels)
    sections: list[tuple[str, list[Figure]]] = []
    if len(rows) > 1:
        sections.append(("Comparison", [Figure("compare_acc_vs_flops.png", "Final average accuracy against training "
                                               "FLOPs (log scale), mean ± std over seeds", compare_figure(rows, labels))]))
    seen: set[str] = set()
    for run in inputs.single:
        slug = _slug(run.label)
        while slug in seen:
            slug += "_"
        seen.add(slug)
        figs = []
        for name in RUN_FIGURES:
            fig = RUN_FIGURES.get(name)(run)
            if fig is not None:
                figs.append(Figure(f"{slug}_{name}.png", f"{run.label}: {name.replace('_', ' ')}", fig))
        sections.append((run.label, figs))
    for _, figs in sections:
        for f in figs:
            buf = io.BytesIO()
            f.figure.savefig(buf, format="png")
            f.png = buf.getvalue()
    return sections, entries


def page(title: str, sections: list[tuple[str, list[Figure]]], entries: list[dict[str, Any]]) -> str:
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
             "<h2>Mean ± std over seeds</h2>", to_html(entries)]
    for heading, figs in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        for f in figs:
            data = base64.b64encode(f.png).decode("ascii")
            parts.append(f"<figure><img src='data:image/png;base64,{data}' alt='{html.escape(f.caption)}'>"
                         f"<figcaption>{html.escape(f.caption)}</figcaption></figure>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_report(inputs: Inputs, out: Path, title: str = "sparsecl report") -> tuple[Path, list[Figure]]:
    """Write ``report.html``, ``table.md`` and every figure's PNG into ``out``; returns the page and figures."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sections, entries = render(inputs)
    figures = [f for _, figs in sections for f in figs]
    for f in figures:
        atomic_write(out / f.name, f.png)
    atomic_write(out / "table.md", markdown(entries))
    atomic_write(out / "report.html", page(title, sections, entries))
    return out / "report.html", figures
