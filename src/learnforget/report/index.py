"""The index page of a multi-study run (the demo): one link per study report."""

from __future__ import annotations

import html
import json
from pathlib import Path

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>learnforget: {title}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}}
li{{margin:.4rem 0}}</style></head>
<body><h1>learnforget: {title}</h1>
<p>One report per study (target domain and regime). Each has its figures, verdict table,
recommendation and claims checklist; every number is in that study's measurements.csv.</p>
<ul>{items}</ul></body></html>
"""


def write_index(root: Path, outs: list[Path]) -> Path:
    """Write ``root/index.html`` linking each study's ``report/index.html`` (relative links)."""
    items = []
    for out in outs:
        study = json.loads((out / "study.json").read_text())
        target = study["target"]
        link = (out / "report" / "index.html").relative_to(root)
        items.append(
            f'<li><a href="{html.escape(str(link))}">{html.escape(study["name"])}</a>: '
            f'{html.escape(target["domain"])} {html.escape(target["regime"].upper())} on '
            f'{html.escape(study["base"]["model"])}</li>'
        )
    index = root / "index.html"
    index.write_text(PAGE.format(title=html.escape(root.name), items="".join(items)))
    return index
