"""Extraction speed and quality per document format, against the same text as ``.txt``.

Generates one document per format from the same Spanish pages (corpora/es paragraphs, ~2,500
characters a page): a PDF (fpdf2), an HTML page, a DOCX, an ODT and an EPUB whose sections hold
the same text, and the plain ``.txt``. For each it times the reader ``beto-search ingest`` uses
(``beto_search.formats.read_format``; ``readers.read_file`` for the .txt) and prints pages/s,
MB/s of text and the word recall against the source text (the share of the source's words that
come out, counted with multiplicity). With ``--compare`` it also times the other PDF libraries
that are installed (pypdf, pdfminer.six) on the same PDF, and checks how much page furniture
(menus, cookie banner, footer) a naive HTML text dump (selectolax) lets through where the
main-content extraction lets none.

    python benchmarks/formats.py --pages 60 --compare

The last line printed is one JSON object. Streaming ingest of huge documents (peak memory, time)
is measured separately by the big-document benchmark.
"""

from __future__ import annotations

import argparse
import html
import tempfile
import time
import zipfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from beto_search.formats import read_format
from beto_search.readers import ReaderOptions, ReadReport, read_file

from common import emit, loadavg, paragraphs

PAGE_CHARS = 2500


def pages_of_text(n: int) -> list[str]:
    """``n`` pages of corpus paragraphs (latin-1 safe: fpdf2's core fonts)."""
    paras = [p.replace("#", "").strip() for p in paragraphs()]
    paras = [p.encode("latin-1", "ignore").decode("latin-1") for p in paras]
    pages, i = [], 0
    for _ in range(n):
        page: list[str] = []
        while sum(len(p) for p in page) < PAGE_CHARS:
            page.append(paras[i % len(paras)])
            i += 1
        pages.append("\n\n".join(page))
    return pages


def write_all(folder: Path, pages: list[str]) -> dict[str, Path]:
    import docx
    from fpdf import FPDF
    from odf import text as odftext
    from odf.opendocument import OpenDocumentText

    out = {}
    out["txt"] = folder / "libro.txt"
    out["txt"].write_text("\n\n".join(pages), encoding="utf-8")

    pdf = FPDF()
    pdf.set_font("helvetica", size=10)
    for page in pages:
        pdf.add_page()
        pdf.multi_cell(0, 4.5, page)
    out["pdf"] = folder / "libro.pdf"
    pdf.output(str(out["pdf"]))

    body = "".join(
        f"<section><h2>Página {n}</h2>"
        + "".join(f"<p>{html.escape(p)}</p>" for p in page.split("\n\n"))
        + "</section>"
        for n, page in enumerate(pages, start=1)
    )
    out["html"] = folder / "libro.html"
    out["html"].write_text(
        '<html lang="es"><head><meta charset="utf-8"><title>Libro</title></head><body>'
        '<nav><a href="/">Portada</a> <a href="/archivo">Archivo</a></nav>'
        f"<article><h1>Libro</h1>{body}</article><footer>Aviso legal</footer></body></html>",
        encoding="utf-8",
    )

    d = docx.Document()
    for n, page in enumerate(pages, start=1):
        d.add_heading(f"Página {n}", level=1)
        for p in page.split("\n\n"):
            d.add_paragraph(p)
    out["docx"] = folder / "libro.docx"
    d.save(str(out["docx"]))

    odt = OpenDocumentText()
    for n, page in enumerate(pages, start=1):
        odt.text.addElement(odftext.H(outlinelevel=1, text=f"Página {n}"))
        for p in page.split("\n\n"):
            odt.text.addElement(odftext.P(text=p))
    out["odt"] = folder / "libro.odt"
    odt.save(str(out["odt"]))

    out["epub"] = folder / "libro.epub"
    with zipfile.ZipFile(out["epub"], "w") as z:
        z.writestr("mimetype", "application/epub+zip")
        z.writestr(
            "META-INF/container.xml",
            '<container xmlns="urn:oasis:names:tc:opendocument:xmlns:container"><rootfiles>'
            '<rootfile full-path="content.opf"/></rootfiles></container>',
        )
        items, refs = [], []
        for n, page in enumerate(pages, start=1):
            z.writestr(
                f"c{n}.xhtml",
                f'<html xmlns="http://www.w3.org/1999/xhtml"><head><title>Página {n}</title>'
                f"</head><body><h1>Página {n}</h1>"
                + "".join(f"<p>{html.escape(p)}</p>" for p in page.split("\n\n"))
                + "</body></html>",
            )
            items.append(f'<item id="c{n}" href="c{n}.xhtml" media-type="application/xhtml+xml"/>')
            refs.append(f'<itemref idref="c{n}"/>')
        z.writestr(
            "content.opf",
            '<package xmlns="http://www.idpf.org/2007/opf" version="3.0"><metadata/>'
            f"<manifest>{''.join(items)}</manifest><spine>{''.join(refs)}</spine></package>",
        )
    return out


def recall(source: str, got: str) -> float:
    """The share of the source's words found in the output (with multiplicity)."""
    want, have = Counter(source.split()), Counter(got.split())
    return sum((want & have).values()) / max(1, sum(want.values()))


def timed(fn: Callable[[], str], repeats: int) -> tuple[float, str]:
    best, out = float("inf"), ""
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pages", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    ap.add_argument("--compare", action="store_true", help="also other PDF/HTML libraries")
    args = ap.parse_args()
    pages = pages_of_text(args.pages)
    source = "\n\n".join(pages)
    results: dict[str, Any] = {"pages": args.pages, "chars": len(source), "load": loadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        files = write_all(Path(tmp), pages)

        def read_txt() -> str:
            docs = list(read_file(files["txt"], Path(tmp), ReaderOptions(), ReadReport()))
            return docs[0].text

        readers: dict[str, Callable[[], str]] = {"txt": read_txt}
        for fmt in ("pdf", "html", "docx", "odt", "epub"):
            readers[fmt] = lambda f=files[fmt]: read_format(f).text
        if args.compare:
            readers.update(compare_readers(files))
        for name, fn in readers.items():
            seconds, text = timed(fn, args.repeats)
            size = files.get(name.split(":")[0], files["pdf"]).stat().st_size
            results[name] = {
                "seconds": round(seconds, 4),
                "pages_per_s": round(args.pages / seconds, 1),
                "text_mb_per_s": round(len(text.encode()) / seconds / 1e6, 2),
                "file_kb": round(size / 1000, 1),
                "word_recall": round(recall(source, text), 4),
            }
            r = results[name]
            print(
                f"{name:>16}: {r['pages_per_s']:>8} pages/s  {r['text_mb_per_s']:>6} MB/s text"
                f"  recall {r['word_recall']:.3f}  ({r['file_kb']} kB file)",
                flush=True,
            )
        if args.compare:
            results["html_furniture"] = html_furniture()
            print("words of page furniture let through:", results["html_furniture"])
    results["load_after"] = loadavg()
    emit(results)


def compare_readers(files: dict[str, Path]) -> dict[str, Callable[[], str]]:
    out: dict[str, Callable[[], str]] = {}
    try:
        import pypdf

        out["pdf:pypdf"] = lambda: "\n".join(
            p.extract_text() for p in pypdf.PdfReader(files["pdf"]).pages
        )
    except ImportError:
        pass
    try:
        from pdfminer.high_level import extract_text

        out["pdf:pdfminer.six"] = lambda: extract_text(files["pdf"])
    except ImportError:
        pass
    return out


def html_furniture() -> dict[str, int]:
    """Menu, cookie-banner and footer words in the text of a news page, per extractor."""
    import trafilatura

    page = (
        "<html><head><title>Noticia</title><style>.x{color:red}</style></head><body>"
        "<nav><a>Portada</a> <a>Deportes</a> <a>Economía</a></nav>"
        "<div class='cookie-banner'>Aceptamos galletas para mejorar su experiencia</div>"
        "<article><h1>Noticia</h1>"
        + "<p>Los pescadores de Cádiz volvieron al muelle con una captura récord.</p>"
        * 5
        + "</article><footer>Aviso legal y derechos reservados</footer>"
        "<script>var rastreo = 1;</script></body></html>"
    )
    noise = {"Portada", "Deportes", "Economía", "galletas", "Aviso", "derechos", "rastreo"}
    texts = {"trafilatura": trafilatura.extract(page) or ""}
    try:
        from selectolax.lexbor import LexborHTMLParser

        tree = LexborHTMLParser(page)
        for node in tree.css("script, style"):
            node.decompose()
        texts["selectolax body text"] = tree.body.text(separator=" ") if tree.body else ""
    except ImportError:
        pass
    return {name: sum(w.strip(".,") in noise for w in t.split()) for name, t in texts.items()}


if __name__ == "__main__":
    main()
