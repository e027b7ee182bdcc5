"""Spanish sample documents of every format, generated on the fly (no binaries committed).

Used by the tests and by ``benchmarks/formats.py``. Writers: fpdf2 (PDF), pypdf (encryption),
python-docx (DOCX), odfpy (ODT), zipfile (EPUB).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

HEADER = "Boletín Oficial de Pruebas"
PARAGRAPHS = [
    "El año pasado la compañía española instaló una red de señales en la montaña.",
    "¿Dónde está la información? ¡Aquí mismo, en el archivo de la biblioteca!",
    "La niña leyó el capítulo sobre la jurisdicción de los tribunales de Castilla.",
    "Los pingüinos del acuario comían sardinas frescas cada mañana de otoño.",
]
PAGE_LINES = [
    [
        "Capítulo primero: la señal de la montaña.",
        PARAGRAPHS[0],
        "Para obtener más infor-",
        "mación consulte el registro público del ayuntamiento.",
    ],
    [PARAGRAPHS[1], "El cigüeñal del camión se rompió en la carretera de Huesca."],
    [PARAGRAPHS[2], PARAGRAPHS[3]],
]


def write_pdf(path: Path, pages: list[list[str]] | None = None, header: bool = True) -> Path:
    """A PDF with a text layer: one line of text per item, a running header and page numbers."""
    from fpdf import FPDF

    pdf = FPDF(format="A4")
    pdf.set_auto_page_break(False)
    pdf.set_font("helvetica", size=11)
    pages = pages if pages is not None else PAGE_LINES
    for n, lines in enumerate(pages, start=1):
        pdf.add_page()
        if header:
            pdf.set_xy(20, 10)
            pdf.cell(0, 8, HEADER)
        y = 30.0
        for line in lines:
            pdf.set_xy(20, y)
            pdf.cell(0, 8, line)
            y += 9
        if header:
            pdf.set_xy(100, 280)
            pdf.cell(0, 8, f"Página {n}")
    pdf.set_title("Informe de prueba")
    pdf.set_author("María Núñez")
    pdf.output(str(path))
    return path


def write_encrypted_pdf(path: Path) -> Path:
    """A PDF that opens only with a password."""
    from pypdf import PdfReader, PdfWriter

    plain = write_pdf(path.with_name(path.stem + "-plain.pdf"))
    writer = PdfWriter(clone_from=PdfReader(plain))
    writer.encrypt(user_password="contraseña", owner_password="dueño", algorithm="RC4-128")
    with path.open("wb") as fh:
        writer.write(fh)
    plain.unlink()
    return path


def write_image_pdf(path: Path) -> Path:
    """A scanned-looking PDF: one image per page, no text layer."""
    from fpdf import FPDF
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (400, 200), "white")
    ImageDraw.Draw(img).text((10, 80), "Texto escaneado sin capa de texto", fill="black")
    pdf = FPDF()
    for _ in range(2):
        pdf.add_page()
        pdf.image(img, x=10, y=10, w=180)
    pdf.output(str(path))
    return path


def write_damaged_pdf(path: Path) -> Path:
    """A PDF cut in half (a broken download)."""
    whole = write_pdf(path.with_name(path.stem + "-whole.pdf")).read_bytes()
    path.write_bytes(whole[: len(whole) // 3])
    path.with_name(path.stem + "-whole.pdf").unlink()
    return path


NEWS_HTML = """<!DOCTYPE html>
<html lang="es"><head><meta charset="utf-8">
<title>Crónica del puerto | Diario Ejemplo</title>
<meta property="og:title" content="Crónica del puerto">
<meta name="author" content="Begoña Ibáñez">
<meta property="article:published_time" content="2024-03-05T10:00:00Z">
<style>.menu { color: red } body { font-family: serif }</style>
<script>var seguimiento = "código de rastreo publicitario";</script>
</head><body>
<nav class="menu"><ul><li><a href="/">Portada</a></li><li><a href="/deportes">Deportes</a></li>
<li><a href="/economia">Economía y mercados</a></li></ul></nav>
<div id="cookie-banner" class="cookie-consent">Usamos galletas informáticas para mejorar su
experiencia. Acepte las condiciones de privacidad.</div>
<article>
<h1>Crónica del puerto</h1>
<p>Los pescadores de Cádiz volvieron al muelle con una captura récord de atún rojo, según
explicó el patrón mayor de la cofradía a los periodistas reunidos en la lonja.</p>
<h2>La campaña de pesca</h2>
<p>¿Cuánto durará la bonanza? ¡Nadie lo sabe! La campaña empezó en mayo y los barcos salieron
cada madrugada hacia el estrecho, donde el atún pasa camino del Mediterráneo.</p>
<p>El señor Muñoz, armador desde hace treinta años, aseguró que nunca había visto tanta
abundancia y pidió prudencia a las autoridades pesqueras de Andalucía.</p>
</article>
<footer>© 2024 Diario Ejemplo. Todos los derechos reservados. Aviso legal.</footer>
<script>console.log("más rastreo");</script>
</body></html>
"""

LATIN1_HTML = (
    "<html><head><title>Año nuevo en Logroño</title></head><body>"
    "<h1>Año nuevo en Logroño</h1>"
    "<p>La señora Peña celebró el año nuevo con sus vecinos del barrio. ¿Qué pidió? "
    "¡Más años de salud y pequeñas alegrías para toda la compañía del pueblo riojano!</p>"
    "<p>Los niños cantaron canciones tradicionales en la plaza mientras caía la nieve.</p>"
    "</body></html>"
)


def write_html(path: Path) -> Path:
    path.write_text(NEWS_HTML, encoding="utf-8")
    return path


def write_latin1_html(path: Path) -> Path:
    """An HTML page in latin-1 without any charset declaration."""
    path.write_bytes(LATIN1_HTML.encode("latin-1"))
    return path


def write_docx(path: Path) -> Path:
    """A DOCX with a title, headings, paragraphs, a table and core properties."""
    import datetime as dt

    import docx

    d = docx.Document()
    d.core_properties.title = "Memoria anual de la asociación"
    d.core_properties.author = "José Peñalver"
    d.core_properties.created = dt.datetime(2023, 6, 1, 9, 30)
    d.core_properties.language = "es-ES"
    d.add_heading("Capítulo 1", level=1)
    d.add_paragraph("La asociación celebró su asamblea en el salón de la compañía.")
    d.add_heading("Artículo 2", level=2)
    d.add_paragraph("¿Quién paga la cuota? ¡Todos los socios, sin excepción alguna!")
    table = d.add_table(rows=2, cols=2)
    table.cell(0, 0).text = "Categoría"
    table.cell(0, 1).text = "Importe en euros"
    table.cell(1, 0).text = "Cuota de señoría"
    table.cell(1, 1).text = "Ciento cincuenta"
    d.add_heading("Capítulo 2", level=1)
    d.add_paragraph("El cigüeñal de la máquina de café se averió durante el invierno.")
    d.save(str(path))
    return path


def write_odt(path: Path) -> Path:
    """An ODT with headings, paragraphs, a table and metadata."""
    from odf import dc, meta, table, text
    from odf.opendocument import OpenDocumentText

    doc = OpenDocumentText()
    doc.meta.addElement(dc.Title(text="Acta de la reunión vecinal"))
    doc.meta.addElement(dc.Creator(text="Íñigo Muñoz"))
    doc.meta.addElement(dc.Date(text="2022-11-20T18:00:00"))
    doc.meta.addElement(dc.Language(text="es-ES"))
    doc.meta.addElement(meta.InitialCreator(text="Íñigo Muñoz"))
    doc.text.addElement(text.H(outlinelevel=1, text="Orden del día"))
    doc.text.addElement(text.P(text="Los vecinos discutieron la reparación del ascensor."))
    doc.text.addElement(text.H(outlinelevel=2, text="Presupuesto"))
    doc.text.addElement(text.P(text="¿Cuánto costará? ¡Demasiado para la comunidad pequeña!"))
    t = table.Table(name="Cuentas")
    t.addElement(table.TableColumn(numbercolumnsrepeated=2))
    for a, b in (("Concepto", "Importe"), ("Señalización del portal", "Doscientos euros")):
        row = table.TableRow()
        for value in (a, b):
            cell = table.TableCell()
            cell.addElement(text.P(text=value))
            row.addElement(cell)
        t.addElement(row)
    doc.text.addElement(t)
    doc.save(str(path))
    return path


def write_epub(path: Path) -> Path:
    """A two-chapter EPUB 3 (a zip with a container, an OPF spine and XHTML chapters)."""
    chapters = [
        ("cap1.xhtml", "Capítulo uno", "La niña miró el mar desde el acantilado de Asturias."),
        ("cap2.xhtml", "Capítulo dos", "¿Volverá el barco? ¡Sí, con la marea de mañana!"),
    ]
    opf = (
        '<?xml version="1.0" encoding="utf-8"?>'
        '<package xmlns="http://www.idpf.org/2007/opf" version="3.0" unique-identifier="id">'
        '<metadata xmlns:dc="http://purl.org/dc/elements/1.1/">'
        '<dc:identifier id="id">libro-1</dc:identifier><dc:title>Historias del Cantábrico</dc:title>'
        "<dc:creator>Nuria Cañete</dc:creator><dc:language>es</dc:language>"
        "<dc:date>2021-04-23</dc:date></metadata><manifest>"
        + "".join(
            f'<item id="c{i}" href="{name}" media-type="application/xhtml+xml"/>'
            for i, (name, _, _) in enumerate(chapters)
        )
        + "</manifest><spine>"
        + "".join(f'<itemref idref="c{i}"/>' for i in range(len(chapters)))
        + "</spine></package>"
    )
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("mimetype", "application/epub+zip", compress_type=zipfile.ZIP_STORED)
        z.writestr(
            "META-INF/container.xml",
            '<?xml version="1.0"?><container version="1.0" '
            'xmlns="urn:oasis:names:tc:opendocument:xmlns:container"><rootfiles>'
            '<rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/>'
            "</rootfiles></container>",
        )
        z.writestr("OEBPS/content.opf", opf)
        for name, title, body in chapters:
            z.writestr(
                f"OEBPS/{name}",
                '<?xml version="1.0" encoding="utf-8"?><html xmlns="http://www.w3.org/1999/xhtml">'
                f"<head><title>{title}</title></head><body><h1>{title}</h1><p>{body}</p>"
                "</body></html>",
            )
    return path
