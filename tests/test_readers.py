"""What a reader makes of a file: the documents it yields and the reason for every file or record
it skips (encodings, BOMs, NULs, binary and empty files, malformed JSON/JSONL/CSV records,
unreadable files and folder loops). Called through ``beto_search.readers`` directly; what the CLI
prints about skips is in tests/cli/test_bad_inputs.py."""

from __future__ import annotations

import csv
import errno
import json
import os
import pathlib
import zlib
from pathlib import Path

import numpy as np
import pytest

from beto_search.readers import ReaderOptions, ReadReport, detect_encoding, iter_files, read_file
from beto_search.types import Document

SPANISH = (
    "¿Qué pasó con la canción del niño? ¡Año tras año, el señor Muñoz cantó «Cielito "
    "lindo» en Cádiz! La pingüina comió piñas y acentos: á é í ó ú ü ñ Ñ.\n"
)


def read_all(
    root: Path, opts: ReaderOptions | None = None
) -> tuple[dict[str, Document], ReadReport]:
    """Every document under ``root`` by id (the last of an id wins) and the walk's report."""
    opts = opts or ReaderOptions()
    report = ReadReport()
    docs: dict[str, Document] = {}
    for path, where in iter_files([root], report, opts):
        for doc in read_file(path, where, opts, report):
            docs[doc.id] = doc
    return docs, report


def reasons(report: ReadReport) -> dict[str, str]:
    return {s.where: s.reason for s in report.skips}


def test_csv_reading_keeps_the_global_field_size_limit(tmp_path: Path) -> None:
    big = "palabra " * 40_000  # 320 000 characters: above csv's default 131 072 field limit
    path = tmp_path / "big.csv"
    path.write_text(f'id,text\nbig,"{big}"\nsmall,pequeño\n', encoding="utf-8")
    before = csv.field_size_limit()
    report = ReadReport()
    docs = read_file(path, tmp_path, ReaderOptions(), report)
    first = next(docs)
    assert csv.field_size_limit() == before  # also while the reader is suspended mid-file
    rest = list(docs)
    assert [d.id for d in [first, *rest]] == ["big", "small"]
    assert len(first.text) > 131_072 and not report.skips
    assert csv.field_size_limit() == before


# encodings -----------------------------------------------------------------------------------
def test_cp1252_and_latin1_files_and_records_are_detected(tmp_path: Path) -> None:
    text = SPANISH * 3 + "Precio: 20 € — “comillas” y más.\n"
    (tmp_path / "cp1252.txt").write_bytes(text.encode("cp1252"))
    latin = SPANISH * 3
    (tmp_path / "latin1.txt").write_bytes(latin.encode("latin-1"))
    rec = {"id": "j1", "text": SPANISH * 2, "title": "Canción"}
    (tmp_path / "records.jsonl").write_bytes(
        (json.dumps(rec, ensure_ascii=False) + "\n").encode("cp1252")
    )
    (tmp_path / "rows.csv").write_bytes(
        f'id,title,text\nc1,Año,"{SPANISH * 2}"\n'.encode("latin-1")
    )
    docs, report = read_all(tmp_path)
    assert report.skips == [] and len(docs) == 4
    assert docs["cp1252.txt"].text == text
    assert docs["latin1.txt"].text == latin
    assert docs["j1"].text == SPANISH * 2 and docs["j1"].title == "Canción"
    assert docs["c1"].text == SPANISH * 2 and docs["c1"].title == "Año"


def test_detection_prefers_cp1252_only_for_western_text() -> None:
    assert detect_encoding("año".encode("latin-1")) == "cp1252"  # too short for any detector
    assert detect_encoding(SPANISH.encode("cp1252")) == "cp1252"
    russian = "Сегодня хорошая погода, и мы идём гулять в парк с собакой. " * 3
    assert detect_encoding(russian.encode("cp1251")) == "cp1251"
    czech = "Příliš žluťoučký kůň úpěl ďábelské ódy. " * 3
    assert detect_encoding(czech.encode("cp1250")) == "cp1250"


def test_a_forced_encoding_decodes_exactly_and_an_unknown_one_is_a_skip(tmp_path: Path) -> None:
    (tmp_path / "utf8.txt").write_text("canción de cuna para el niño\n", encoding="utf-8")
    docs, _ = read_all(tmp_path, ReaderOptions(encoding="latin-1"))
    assert docs["utf8.txt"].text == "canciÃ³n de cuna para el niÃ±o\n"
    # a short cp1252 text whose detection is ambiguous decodes exactly when forced
    (tmp_path / "utf8.txt").unlink()
    (tmp_path / "short.txt").write_bytes("Señal € “sí”".encode("cp1252"))
    docs, _ = read_all(tmp_path, ReaderOptions(encoding="cp1252"))
    assert docs["short.txt"].text == "Señal € “sí”"
    docs, report = read_all(tmp_path, ReaderOptions(encoding="no-such-codec"))
    assert docs == {}
    assert [s.where for s in report.skips] == [str(tmp_path / "short.txt")]
    assert "no-such-codec" in report.skips[0].reason


# BOMs and NULs -------------------------------------------------------------------------------
def test_a_utf8_bom_is_dropped_in_every_format(tmp_path: Path) -> None:
    bom = b"\xef\xbb\xbf"
    (tmp_path / "bom.txt").write_bytes(bom + "Título con BOM\nTexto del niño.\n".encode())
    (tmp_path / "bom.md").write_bytes(bom + "# Canción\n\nLetra de la canción.\n".encode())
    (tmp_path / "bom.jsonl").write_bytes(
        bom + b'{"id": "j1", "text": "primera l\xc3\xadnea"}\n{"id": "j2", "text": "segunda"}\n'
    )
    (tmp_path / "bom.csv").write_bytes(bom + b"id,text\nc1,fila con BOM\n")
    (tmp_path / "bom.json").write_bytes(bom + b'[{"id": "k1", "text": "json con BOM"}]')
    docs, report = read_all(tmp_path)
    assert report.skips == []
    assert set(docs) == {"bom.txt", "bom.md", "j1", "j2", "c1", "k1"}
    assert docs["bom.txt"].title == "Título con BOM"
    assert docs["bom.md"].title == "Canción"
    assert docs["j1"].text == "primera línea"
    for doc in docs.values():
        assert "\ufeff" not in doc.text + doc.title + doc.id


def test_nul_bytes_are_dropped_and_a_nul_heavy_file_is_binary(tmp_path: Path) -> None:
    line = "El río Ebro pasa por Zaragoza y desemboca en el Mediterráneo.\n"
    (tmp_path / "nul.txt").write_bytes(("\x00" + line * 10 + "fin\x00\n").encode())  # stray NULs
    (tmp_path / "utf16-ish.txt").write_bytes("texto sin BOM".encode("utf-16-le"))  # NUL-heavy
    (tmp_path / "nul.jsonl").write_bytes(
        b'{"id": "j1", "text": "escape \\u0000 nulo"}\n{"id": "j2", "text": "byte \x00 nulo"}\n'
    )
    docs, report = read_all(tmp_path)
    assert docs["nul.txt"].text == line * 10 + "fin\n"
    assert reasons(report) == {str(tmp_path / "utf16-ish.txt"): "binary file, not text"}
    assert docs["j1"].text == "escape  nulo" and docs["j2"].text == "byte  nulo"
    assert all("\x00" not in d.text for d in docs.values())


# binary, empty, unsupported ------------------------------------------------------------------
def test_binary_empty_and_unsupported_files_are_skipped_with_their_reason(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    (tmp_path / "elf.txt").write_bytes(b"\x7fELF\x02\x01\x01" + bytes(64) + bytes(range(256)) * 8)
    (tmp_path / "png.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + rng.bytes(3000))
    (tmp_path / "zip.jsonl").write_bytes(zlib.compress(rng.bytes(5000)) + rng.bytes(5000))
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "blank.md").write_text("  \n\t\n   \r\n")
    (tmp_path / "bom-only.txt").write_bytes(b"\xef\xbb\xbf\n")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    (tmp_path / "notext.jsonl").write_text(
        '{"id": "n1", "text": "   "}\n{"id": "n2", "text": "bien"}\n'
    )
    (tmp_path / "good.txt").write_text("Un documento normal sobre la paella valenciana.\n")
    (tmp_path / "image.png").write_bytes(b"\x89PNG")  # not a supported extension: listed, not read
    docs, report = read_all(tmp_path)
    assert set(docs) == {"good.txt", "n2"}
    expected = {name: "binary file, not text" for name in ("elf.txt", "png.txt", "zip.jsonl")}
    for name in ("empty.txt", "blank.md", "bom-only.txt", "empty.jsonl"):
        expected[name] = "empty or whitespace-only"
    expected["notext.jsonl:1"] = "no text in field 'text'"
    expected["image.png"] = "unsupported extension .png"
    assert reasons(report) == {str(tmp_path / k): v for k, v in expected.items()}


# malformed records ---------------------------------------------------------------------------
def test_malformed_jsonl_lines_are_skipped_with_file_and_line(tmp_path: Path) -> None:
    lines = [
        '{"id": "a", "text": "primero"}',
        '{"id": "b", "text": "sin cerrar"',
        "[1, 2, 3]",
        "",
        "no es json",
        '{"id": "c", "text": "último"}',
        '{"id": "d", "text": 42}',
        '{"id": "e", "text": "truncado',
    ]
    path = tmp_path / "datos.jsonl"
    path.write_text("\n".join(lines))
    docs, report = read_all(tmp_path)
    assert set(docs) == {"a", "c"}
    skipped = reasons(report)
    assert set(skipped) == {f"{path}:{n}" for n in (2, 3, 5, 7, 8)}
    assert skipped[f"{path}:2"].startswith("malformed JSON")
    assert skipped[f"{path}:3"] == "not a JSON object"
    assert skipped[f"{path}:5"].startswith("malformed JSON")
    assert skipped[f"{path}:7"] == "no text in field 'text'"


def test_malformed_csv_rows_are_skipped_and_quoted_fields_kept(tmp_path: Path) -> None:
    path = tmp_path / "filas.csv"
    path.write_text(
        "id,title,text\n"
        "r1,Uno,texto uno\n"
        "r2,Dos\n"  # too few fields
        "r3,Tres,texto tres,extra\n"  # too many
        'r4,Cuatro,"texto, con coma"\n'
        "\n"
        'r5,Cinco,"""comillas"" y\nsalto de línea"\n'
        "r6,Seis,\n"  # empty text
        'r7,Siete,"sin cerrar\n',  # an unterminated quote at the end: taken as is
        encoding="utf-8",
    )
    docs, report = read_all(tmp_path)
    assert set(docs) == {"r1", "r4", "r5", "r7"}
    assert docs["r7"].text == "sin cerrar\n"
    assert docs["r4"].text == "texto, con coma"
    assert docs["r5"].text == '"comillas" y\nsalto de línea'
    wheres = [s.where for s in report.skips]
    assert f"{path}:3" in wheres and f"{path}:4" in wheres
    assert all(w.startswith(f"{path}:") for w in wheres) and len(wheres) == 3
    assert {s.reason for s in report.skips} == {
        "malformed CSV row (2 fields, header has 3)",
        "malformed CSV row (4 fields, header has 3)",
        "no text in field 'text'",
    }


def test_a_csv_without_the_text_column_is_skipped_naming_its_columns(tmp_path: Path) -> None:
    (tmp_path / "filas.csv").write_text("id,cuerpo\n1,hola\n")
    docs, report = read_all(tmp_path)
    assert docs == {}
    assert [s.reason for s in report.skips] == ["CSV has no 'text' column (columns: id, cuerpo)"]


# hostile folders -----------------------------------------------------------------------------
def _hostile_tree(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "uno.txt").write_text("Documento uno sobre montañas.\n")
    (root / "a" / "b" / "dos.txt").write_text("Documento dos sobre ríos.\n")
    (root / "a" / "b" / "loop").symlink_to(root / "a")  # a folder loop
    (root / "self").symlink_to(root)  # the root itself
    (root / "bucle.txt").symlink_to(root / "bucle.txt")  # a file symlink loop
    (root / "roto.txt").symlink_to(root / "no-existe.txt")  # dangling
    (root / "secreto.txt").write_text("No deberías poder leer esto.\n")
    (root / "cerrada").mkdir()
    (root / "cerrada" / "tres.txt").write_text("Documento tres.\n")
    return root


def test_symlink_loops_and_unreadable_files_are_skipped_and_each_file_read_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _hostile_tree(tmp_path)
    real_open, real_scandir = pathlib.Path.open, os.scandir

    def guarded_open(self, *args, **kwargs):  # root ignores chmod 000, so refuse like the kernel
        if self.name == "secreto.txt":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real_open(self, *args, **kwargs)

    def guarded_scandir(path=".", *args):
        if os.path.basename(os.fspath(path)) == "cerrada":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))
        return real_scandir(path, *args)

    monkeypatch.setattr(pathlib.Path, "open", guarded_open)
    monkeypatch.setattr(os, "scandir", guarded_scandir)
    report = ReadReport()
    ids = []
    for path, where in iter_files([root], report):
        ids += [d.id for d in read_file(path, where, ReaderOptions(), report)]
    assert sorted(ids) == ["a/b/dos.txt", "a/uno.txt"]  # each once, however many ways lead there
    skipped = reasons(report)
    assert skipped[str(root / "secreto.txt")] == "unreadable file (Permission denied)"
    assert skipped[str(root / "cerrada")] == "unreadable folder (Permission denied)"
    assert skipped[str(root / "bucle.txt")] == "unreadable file (Too many levels of symbolic links)"
    assert skipped[str(root / "roto.txt")] == "unreadable file (No such file or directory)"
    assert "symlink loop (folder already visited)" in skipped.values()
    assert report.files == 2


@pytest.mark.skipif(
    os.geteuid() == 0,
    reason="tests run as root, who reads chmod 000 files anyway; "
    "test_symlink_loops_and_unreadable_files_are_skipped_and_each_file_read_once simulates "
    "EACCES instead",
)
def test_unreadable_file_real_permissions(tmp_path: Path) -> None:  # pragma: no cover - non-root
    root = tmp_path / "docs"
    root.mkdir()
    (root / "secreto.txt").write_text("privado\n")
    (root / "secreto.txt").chmod(0)
    report = ReadReport()
    for path, r in iter_files([root], report):
        list(read_file(path, r, ReaderOptions(), report))
    assert report.skips[0].reason.startswith("unreadable file")


# the folder walk: hidden files, include/exclude, size limits, ids -----------------------------
def test_hidden_files_and_folders_are_skipped_one_skip_per_hidden_folder(tmp_path: Path) -> None:
    (tmp_path / ".git" / "objects").mkdir(parents=True)
    for i in range(5):
        (tmp_path / ".git" / "objects" / f"{i}.txt").write_text("oculto\n")
    (tmp_path / ".oculto.txt").write_text("tampoco\n")
    (tmp_path / "visible.txt").write_text("Un texto visible.\n")
    docs, report = read_all(tmp_path)
    assert set(docs) == {"visible.txt"}
    assert reasons(report) == {
        str(tmp_path / ".git") + os.sep: "hidden folder",
        str(tmp_path / ".oculto.txt"): "hidden file",
    }
    # a hidden file named on purpose is read
    docs, report = read_all(tmp_path / ".oculto.txt")
    assert [d.id for d in docs.values()] == [".oculto.txt"] and report.skips == []


def test_include_and_exclude_globs_leave_files_and_folders_out_and_count_them(
    tmp_path: Path,
) -> None:
    (tmp_path / "borradores").mkdir()
    (tmp_path / "borradores" / "a.txt").write_text("borrador\n")
    (tmp_path / "notas.md").write_text("# Notas\n\ntexto\n")
    (tmp_path / "uno.txt").write_text("uno\n")
    (tmp_path / "viejo.txt").write_text("viejo\n")
    opts = ReaderOptions(include=("*.txt",), exclude=("viejo*", "borradores/"))
    docs, report = read_all(tmp_path, opts)
    assert set(docs) == {"uno.txt"}
    assert report.skips == [] and report.excluded == 3  # the folder, notas.md, viejo.txt
    # a glob matches the path under the ingested folder as well as the name
    docs, report = read_all(tmp_path, ReaderOptions(exclude=("borradores/a.txt",)))
    assert set(docs) == {"notas.md", "uno.txt", "viejo.txt"} and report.excluded == 1


def test_files_over_the_size_limit_are_skipped_naming_both_sizes(tmp_path: Path) -> None:
    (tmp_path / "grande.txt").write_text("palabra " * 2000)  # 16 000 bytes
    (tmp_path / "chico.txt").write_text("poco\n")
    docs, report = read_all(tmp_path, ReaderOptions(max_file_size=10_000))
    assert set(docs) == {"chico.txt"}
    assert reasons(report) == {
        str(tmp_path / "grande.txt"): "too large (16.0 kB > --max-file-size 10.0 kB)"
    }


def test_ids_are_paths_under_the_folder_and_records_fall_back_to_their_position(
    tmp_path: Path,
) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.txt").write_text("texto\n")
    (tmp_path / "sub" / "r.jsonl").write_text(
        '{"id": " x1 ", "text": "con id"}\n{"text": "sin id"}\n{"_id": "b1", "text": "beir"}\n'
    )
    (tmp_path / "filas.csv").write_text("id,text\n,sin id\nc2,con id\n")
    (tmp_path / "lista.json").write_text('[{"text": "primero"}, {"id": 7, "text": "segundo"}]')
    docs, report = read_all(tmp_path)
    assert report.skips == []
    assert set(docs) == {"sub/a.txt", "x1", "sub/r.jsonl#2", "b1", "filas.csv#2", "c2"} | {
        "lista.json#1",
        "7",
    }
    # a file named directly takes its name as its id
    docs, _ = read_all(tmp_path / "sub" / "a.txt")
    assert set(docs) == {"a.txt"}
