"""Hybrid search: Spanish matching end to end, hostile queries, filters, snippets, similar."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from beto_search import SearchEngine
from tests.paths import CORPUS

DOCS = [
    {
        "id": "p1",
        "title": "La peña flamenca",
        "text": "La peña flamenca del barrio se reúne cada año.",
        "metadata": {"tema": "musica", "region": "andalucia"},
    },
    {
        "id": "p2",
        "title": "Qué pena",
        "text": "Me da pena que el ano del calendario se escriba mal.",
        "metadata": {"tema": "idioma"},
    },
    {
        "id": "p3",
        "title": "Canciones",
        "text": "Las canciones populares cantaban historias del pueblo.",
        "metadata": {"tema": "musica", "region": "galicia"},
    },
    {
        "id": "p4",
        "title": "El pingüino",
        "text": "El pingüino vive en el hemisferio sur. Nada muy bien.",
        "metadata": {"tema": "ciencia"},
    },
    {
        "id": "p5",
        "title": "O'Brien",
        "text": 'Un texto con comillas: "hola" y O\'Brien.',
        "metadata": {"tema": "it's"},
    },
]


@pytest.fixture
def small(tmp_path: Path, tiny_encoder):
    engine = SearchEngine.open(tmp_path / "small", encoder=tiny_encoder)
    engine.add(DOCS)
    yield engine
    engine.close()


def _ids(hits) -> list[str]:
    return [h.doc_id for h in hits]


def test_accent_insensitive_and_n_tilde_sensitive(small: SearchEngine) -> None:
    assert _ids(small.search("cancion", mode="lexical")) == ["p3"]
    assert _ids(small.search("CANCIÓN", mode="lexical")) == ["p3"]
    assert _ids(small.search("pinguinos", mode="lexical")) == ["p4"]
    assert _ids(small.search("peña", mode="lexical")) == ["p1"]
    assert _ids(small.search("pena", mode="lexical")) == ["p2"]
    assert _ids(small.search("año", mode="lexical")) == ["p1"]
    assert _ids(small.search("ano", mode="lexical")) == ["p2"]
    assert _ids(small.search("cantar", mode="lexical")) == ["p3"]


@pytest.mark.parametrize("mode", ["semantic", "lexical", "hybrid"])
@pytest.mark.parametrize(
    "query",
    [
        '"',
        "'",
        "a OR b",
        "NOT AND OR",
        "-pena",
        "tema:musica",
        "can*",
        "((peña",
        "😀🎸",
        "NEAR(a b)",
        "x" * 5000,
        "; DROP TABLE chunks;--",
        "¿¡?!",
        "\x00a\x00",
        'O\'Brien "hola"',
    ],
)
def test_hostile_queries_never_fail(small: SearchEngine, query: str, mode: str) -> None:
    hits = small.search(query, k=3, mode=mode)
    assert isinstance(hits, list)
    assert small.info()["documents"] == 5


def test_filters_return_exactly_the_matching_documents(small: SearchEngine) -> None:
    hits = small.search("música popular", k=10, mode="semantic", where={"tema": "musica"})
    assert sorted(_ids(hits)) == ["p1", "p3"]
    hits = small.search("música", k=10, where={"tema": "musica", "region": "galicia"})
    assert _ids(hits) == ["p3"]
    assert _ids(small.search("texto", where={"title": "El pingüino"})) == ["p4"]
    assert _ids(small.search("texto", where={"tema": "it's"})) == ["p5"]
    assert small.search("texto", where={"tema": "nada"}) == []


def test_filter_values_cannot_inject_sql(small: SearchEngine) -> None:
    for value in ["musica' OR '1'='1", 'x" OR 1=1 --', "'); DROP TABLE documents; --"]:
        assert small.search("música", where={"tema": value}) == []
    assert small.info()["documents"] == 5
    with pytest.raises(Exception) as err:
        small.search("música", where={"tema') OR 1=1 --": "x"})
    assert "filter key" in str(err.value)


def test_source_glob(tmp_path: Path, tiny_encoder) -> None:

    with SearchEngine.open(tmp_path / "g", encoder=tiny_encoder) as engine:
        engine.ingest([CORPUS])
        hits = engine.search("historia", k=50, source="*/historia/*")
        assert hits and all("/historia/" in h.source for h in hits)
        n = sum(1 for p in (CORPUS / "historia").iterdir() if p.is_file())
        assert len(hits) == n


def test_snippet_and_highlight_offsets(small: SearchEngine) -> None:
    hit = small.search("canciones populares", k=1, mode="lexical")[0]
    doc = small.get_document(hit.doc_id)["text"]
    assert doc[hit.snippet_start : hit.snippet_end] == hit.snippet
    words = [doc[s:e] for s, e in hit.highlight_spans]
    assert words == ["canciones", "populares"]
    assert "<mark>canciones</mark> <mark>populares</mark>" in hit.highlight
    assert hit.to_dict()["highlight"] == hit.highlight
    assert hit.to_dict()["highlight_spans"] == [list(s) for s in hit.highlight_spans]


def test_highlight_escapes_html(tmp_path: Path, tiny_encoder) -> None:
    with SearchEngine.open(tmp_path / "h", encoder=tiny_encoder) as engine:
        engine.add([{"id": "x", "text": "Usa <b>negritas</b> & cursivas en el texto."}])
        hit = engine.search("negritas", mode="lexical")[0]
        assert "&lt;b&gt;<mark>negritas</mark>&lt;/b&gt; &amp;" in hit.highlight


def test_similar_uses_stored_vectors(corpus_index: Path) -> None:
    class Refuses:
        def __init__(self, manifest) -> None:
            self.name, self.dimension = manifest.encoder, manifest.dimension

        def encode_documents(self, texts):
            raise AssertionError("similar must not encode")

        encode_queries = encode_documents

    with SearchEngine.open(corpus_index, create=False) as engine:
        engine.share_encoder(Refuses(engine.manifest))  # the index's own would pass too
        hits = engine.similar("faq-01", k=5)
        assert len(hits) == 5 and "faq-01" not in _ids(hits)
        assert all(a.score >= b.score for a, b in itertools.pairwise(hits))


def test_similar_highlight_is_escaped_like_search(tmp_path: Path, tiny_encoder) -> None:
    """A similar hit's highlight is HTML-safe as search's are (it marks nothing)."""
    evil = "<script>alert(1)</script> El gato <b>negro</b> & el tejado."
    with SearchEngine.open(tmp_path / "s", encoder=tiny_encoder) as engine:
        engine.add(
            [
                {"id": "a", "text": "El gato negro duerme en el tejado."},
                {"id": "evil", "text": evil},
            ]
        )
        (hit,) = engine.similar("a", k=1)
        assert hit.doc_id == "evil" and hit.snippet == evil
        assert hit.highlight == (
            "&lt;script&gt;alert(1)&lt;/script&gt; El gato &lt;b&gt;negro&lt;/b&gt; &amp; el tejado."
        )


@pytest.mark.parametrize("index_type", ["flat", "hnsw", "ivf"])
def test_selective_filter_in_a_large_index_returns_k(
    tmp_path: Path, hash_encoder, index_type
) -> None:
    """1 matching document in 3,000, and 12 matching in 3,000: always k (or all) of them."""
    rng = np.random.default_rng(0)
    n = 3000
    docs = [
        {
            "id": f"d{i}",
            "text": f"documento número {i}",
            "metadata": {"grupo": "raro" if i == 1234 else ("medio" if i % 250 == 0 else "comun")},
        }
        for i in range(n)
    ]
    vectors = rng.standard_normal((n, hash_encoder.dimension)).astype(np.float32)
    with SearchEngine.open(tmp_path / "big", encoder=hash_encoder, index_type=index_type) as engine:
        engine.add(docs[:1])  # creates the manifest with the encoder
        engine.add_embeddings(docs, vectors)
        assert engine.info()["documents"] == n
        assert engine.vectors().kind == index_type
        for mode in ("semantic", "hybrid"):
            hits = engine.search("documento", k=10, mode=mode, where={"grupo": "raro"})
            assert _ids(hits) == ["d1234"]
            hits = engine.search("documento", k=10, mode=mode, where={"grupo": "medio"})
            assert len(hits) == 10
            assert all(h.metadata["grupo"] == "medio" for h in hits)
        hits = engine.search("documento", k=50, mode="semantic", where={"grupo": "comun"})
        assert len(hits) == 50
