"""Markdown headings become section locations (fenced code is not a heading)."""

from __future__ import annotations

from beto_search.formats.markdown import markdown_locations


def test_heading_paths_and_offsets() -> None:
    text = "# Guía\n\nIntro.\n\n## Instalación\n\n```\n# no es título\n```\n\n# Año nuevo ##\nFin."
    locs = markdown_locations(text)
    assert [loc["section"] for _, loc in locs] == ["Guía", "Guía › Instalación", "Año nuevo"]
    assert text[locs[1][0] :].startswith("## Instalación")
    assert text[locs[2][0] :].startswith("# Año nuevo")
