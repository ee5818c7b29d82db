"""docs/xenbus.md embeds the diagrams and grids generated from the state tables."""

from __future__ import annotations

from pathlib import Path

from xenvirtio.hv.xenbus.diagram import extract_doc_block, render_doc_block, render_mermaid
from xenvirtio.hv.xenbus.state import TABLES, Local, Role

DOC = Path(__file__).resolve().parents[2] / "docs" / "xenbus.md"


def test_doc_diagrams_match_the_tables() -> None:
    block = extract_doc_block(DOC.read_text(encoding="utf-8"))
    assert block is not None, "docs/xenbus.md lost its generated block"
    assert block == render_doc_block(), (
        "docs/xenbus.md is stale: run `python -m xenvirtio.hv.xenbus.diagram docs/xenbus.md`"
    )


def test_diagram_has_an_edge_for_every_move() -> None:
    for role in Role:
        text = render_mermaid(role)
        for (own, event), step in TABLES[role].items():
            if step.next is own and not step.actions:
                continue
            edge = f"    {own.xen_name} --> {step.next.xen_name} : "
            line = next(line for line in text.splitlines() if line.startswith(edge))
            assert ("local" if isinstance(event, Local) else event.state.xen_name) in line
