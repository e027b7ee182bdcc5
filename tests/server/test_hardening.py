"""What a hostile client sent the server (issue 16, "Server input"): each answer is a 400 with one
sentence, never a 500, a reset connection, or another client's failure."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from beto_search import SearchEngine
from beto_search.fusion import FUSIONS

pytest.importorskip("fastapi", reason="the server extra (fastapi) is not installed")
httpx = pytest.importorskip("httpx", reason="httpx is needed to call the server")
uvicorn = pytest.importorskip("uvicorn", reason="the server extra (uvicorn) is not installed")
TestClient = pytest.importorskip("fastapi.testclient").TestClient
server = pytest.importorskip("beto_search.server")
ServerSettings, create_app = server.ServerSettings, server.create_app
from beto_search.server.batcher import QueryBatcher  # noqa: E402

KEY = "s3cr3t-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
BASE = "http://127.0.0.1"
JSON = {"Content-Type": "application/json"}


def client(index: Path, encoder, **settings):
    app = create_app(ServerSettings(index=str(index), **settings), encoder=encoder)
    return TestClient(app, base_url=BASE)


@pytest.fixture
def api(index_copy: Path, tiny_encoder):
    with client(index_copy, tiny_encoder, api_key=KEY, public_read=True, write_wait=0.2) as c:
        yield c


def post_raw(c, path: str, text: str, headers: dict | None = None):
    """POST a JSON text as written (escapes such as \\ud800 and NaN kept as they are)."""
    return c.post(path, content=text.encode(), headers={**JSON, **(headers or AUTH)})


def is_400(r) -> bool:
    body = r.json()
    return r.status_code == 400 and set(body) == {"error"} and body["error"].endswith(".")


# ----- item 1: lone surrogates, and a failing batch ---------------------------------------------
@pytest.mark.parametrize(
    "body",
    [
        '{"q": "\\ud800 x", "mode": "semantic"}',
        '{"q": "\\ud800 x", "mode": "lexical"}',
        '{"q": "x", "mode": "\\udc00hybrid"}',
        '{"q": "x", "where": {"\\ud800": "a"}}',
        '{"q": "x", "where": {"categoria": "\\ud800"}}',
        '{"q": "x", "where": ["categoria:\\ud800"]}',
        '{"q": "x", "source": "\\ud800/*"}',
    ],
)
def test_lone_surrogates_in_a_search_are_400(api, body: str) -> None:
    assert is_400(post_raw(api, "/api/search", body))


def test_lone_surrogates_in_documents_are_400_and_ids_never_collapse(api) -> None:
    pair = '[{"id": "doc\\ud800", "text": "uno"}, {"id": "doc\\udc00", "text": "dos"}]'
    assert is_400(post_raw(api, "/api/documents", pair))
    for doc in [
        '[{"id": "m", "text": "hola", "metadata": {"\\ud800": 1}}]',
        '[{"id": "m", "text": "hola", "metadata": {"p": ["\\udfff"]}}]',
        '[{"id": "m", "text": "hola", "title": "\\ud800"}]',
    ]:
        assert is_400(post_raw(api, "/api/documents", doc)), doc
    assert api.get("/api/documents/doc\ufffd").status_code == 404
    assert api.get("/api/documents/m").status_code == 404


def test_one_bad_query_does_not_fail_the_others(index_copy: Path, tiny_encoder) -> None:
    app = create_app(
        ServerSettings(index=str(index_copy), batch_window_ms=50), encoder=tiny_encoder
    )

    async def run() -> list:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as c:
            good = [
                c.post(
                    "/api/search", json={"q": f"consulta {i} sobre economía", "mode": "semantic"}
                )
                for i in range(20)
            ]
            bad = c.post(
                "/api/search",
                content=b'{"q": "\\ud800 x", "mode": "semantic"}',
                headers=JSON,
            )
            return await asyncio.gather(*good[:10], bad, *good[10:])

    responses = asyncio.run(run())
    statuses = [r.status_code for r in responses]
    assert statuses == [200] * 10 + [400] + [200] * 10


def test_the_batcher_isolates_a_failing_item() -> None:
    """The encoder fails on one text of a batch: that query fails alone, the rest are answered."""

    def encode(texts: list[str]) -> np.ndarray:
        if any("malo" in t for t in texts):
            raise ValueError("the encoder refused a text")
        return np.array([[float(len(t)), 1.0] for t in texts], dtype=np.float32)

    batcher = QueryBatcher(encode, window=0.05, max_batch=64)

    async def run() -> list:
        texts = [f"consulta {i}" for i in range(20)]
        texts.insert(7, "texto malo")
        return await asyncio.gather(*(batcher.encode(t) for t in texts), return_exceptions=True)

    try:
        results = asyncio.run(run())
    finally:
        batcher.close()
    assert isinstance(results[7], ValueError)
    good = results[:7] + results[8:]
    assert all(isinstance(v, np.ndarray) for v in good)
    assert [float(v[0]) for v in good] == [len(f"consulta {i}") for i in range(20)]


# ----- item 2: NaN and Infinity in metadata -----------------------------------------------------
@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_metadata_is_400_and_facets_keep_working(api, value: str) -> None:
    doc = f'[{{"id": "nan", "text": "El gato duerme.", "metadata": {{"p": {value}}}}}]'
    r = post_raw(api, "/api/documents", doc)
    assert is_400(r) and "finite" in r.json()["error"]
    assert api.get("/api/documents/nan").status_code == 404
    assert api.get("/api/facets").status_code == 200
    assert api.get("/api/search", params={"q": "gato", "where": "p:1"}).status_code == 200


def test_metadata_limits_are_400(api) -> None:
    deep = '{"a": ' * 40 + "1" + "}" * 40
    assert is_400(
        post_raw(api, "/api/documents", f'[{{"id": "d", "text": "t", "metadata": {deep}}}]')
    )
    many = "{" + ", ".join(f'"k{i}": {i}' for i in range(300)) + "}"
    r = post_raw(api, "/api/documents", f'[{{"id": "d", "text": "t", "metadata": {many}}}]')
    assert is_400(r) and "256" in r.json()["error"]


def test_a_corrupt_stored_row_never_fails_a_read(index_copy: Path, tiny_encoder) -> None:
    """A row written before the checks (or by hand) holding NaN: reads go on, verify reports it."""
    with sqlite3.connect(index_copy / "index.db") as db:
        corrupt = db.execute("SELECT id FROM documents ORDER BY id LIMIT 1").fetchone()[0]
        db.execute("UPDATE documents SET metadata = ? WHERE id = ?", ('{"p": NaN}', corrupt))
    with client(index_copy, tiny_encoder) as c:
        assert c.get("/api/facets").status_code == 200
        where = {"q": "gato", "where": "categoria:economía"}
        assert c.get("/api/search", params=where).status_code == 200
        doc = c.get(f"/api/documents/{corrupt}")
        assert doc.status_code == 200 and doc.json()["metadata"] == {"p": None}
    with SearchEngine.open(index_copy, encoder=tiny_encoder) as engine:
        problems = engine.verify()
    assert any("not valid JSON" in p and corrupt in p for p in problems), problems


# ----- item 3: DNS rebinding ---------------------------------------------------------------------
def test_an_unknown_host_name_is_refused(index_copy: Path, tiny_encoder) -> None:
    with client(index_copy, tiny_encoder) as c:
        r = c.get("/api/search", params={"q": "gato"}, headers={"Host": "attacker.example"})
        assert is_400(r) and "--allowed-host" in r.json()["error"]
        assert (
            c.get("/api/documents/faq.csv#2", headers={"Host": "attacker.example"}).status_code
            == 400
        )
        for host in [
            "127.0.0.1:8000",
            "localhost:8000",
            "LOCALHOST",
            "[::1]:8000",
            "app.localhost",
        ]:
            assert c.get("/api/health", headers={"Host": host}).status_code == 200, host
    with client(index_copy, tiny_encoder, allowed_hosts=["buscador.example.org", "*.intra"]) as c:
        for host in ["buscador.example.org", "buscador.example.org:443", "a.intra"]:
            assert c.get("/api/health", headers={"Host": host}).status_code == 200, host
        assert c.get("/api/health", headers={"Host": "otro.example.org"}).status_code == 400


def test_host_rules() -> None:
    allowed = server.host_allowed
    loopback = ServerSettings(index="x")
    assert allowed("127.0.0.1", loopback) and allowed("::1", loopback)
    assert not allowed("192.168.1.5", loopback) and not allowed("evil.example", loopback)
    everywhere = ServerSettings(index="x", host="0.0.0.0", api_key=KEY)
    assert allowed("192.168.1.5", everywhere) and not allowed("evil.example", everywhere)
    named = ServerSettings(index="x", host="buscador.lan", api_key=KEY)
    assert allowed("buscador.lan", named) and not allowed("otro.lan", named)
    assert allowed("anything", ServerSettings(index="x", allowed_hosts=["*"]))


def test_serve_takes_allowed_host(cli_run) -> None:
    result = cli_run("serve", "--help")
    assert result.exit_code == 0 and "--allowed-host" in result.output


# ----- item 4: 500 instead of 400 -----------------------------------------------------------------
@pytest.mark.parametrize(
    "body",
    [
        '{"q": "x", "source": 123}',
        '{"q": "x", "k": Infinity}',
        '{"q": "x", "k": 1e400}',
        '{"q": "x", "k": NaN}',
        '{"q": "x", "alpha": 1e400}',
        '{"q": "x", "where": [1, 2]}',
        '{"q": "x", "where": {"a": NaN}}',
        '{"q": 5}',
        "[" * 1000 + "]" * 1000,
        '{"q": ' + "[" * 1000 + "]" * 1000 + "}",
        "[" * 100_000,
        "{" * 100_000,
    ],
)
def test_bad_bodies_are_400(api, body: str) -> None:
    assert is_400(post_raw(api, "/api/search", body))


def test_deep_documents_are_400(api) -> None:
    for depth in (260, 1000, 100_000):
        deep = "[" * depth + "]" * depth
        doc = f'[{{"id": "deep", "text": "hola", "metadata": {{"a": {deep}}}}}]'
        assert is_400(post_raw(api, "/api/documents", doc)), depth
    assert api.get("/api/documents/deep").status_code == 404


# ----- item 5: no server path leaks -------------------------------------------------------------
def test_info_shows_no_absolute_path(api, tiny_model: Path, index_copy: Path) -> None:
    info = api.get("/api/info")
    assert info.status_code == 200
    assert str(tiny_model) not in info.text and str(index_copy) not in info.text
    assert info.json()["encoder"] == tiny_model.name


def test_source_globs_cannot_probe_absolute_folders(api) -> None:
    r = api.get("/api/search", params={"q": "contrato", "source": "/*"})
    assert is_400(r) and "relative" in r.json()["error"]
    assert is_400(post_raw(api, "/api/search", '{"q": "contrato", "source": "/tmp/*"}'))
    assert is_400(api.get("/api/search", params={"q": "contrato", "where": "source:/x"}))
    top = Path(__file__).resolve().parts[1]  # the first folder of the corpus's absolute path
    for probe in [f"{top}/*", f"*{top}*", "*/corpora/*", "*es/derecho*"]:
        hits = api.get("/api/search", params={"q": "contrato", "source": probe}).json()
        assert hits["results"] == [], probe
    legit = api.get("/api/search", params={"q": "contrato", "source": "*derecho/*"}).json()
    assert legit["results"] and all(r["source"].startswith("derecho/") for r in legit["results"])


# ----- item 6: the smaller ones -----------------------------------------------------------------
def test_docs_pages_carry_csp_and_frame_headers(api) -> None:
    pytest.importorskip("fastapi_offline", reason="fastapi-offline (server extra) is missing")
    for page in ("/docs", "/redoc"):
        r = api.get(page)
        csp = r.headers["content-security-policy"]
        assert r.status_code == 200 and "frame-ancestors 'none'" in csp, page
        assert (
            "script-src 'self'" in csp
            and "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
        )
        assert r.headers["x-frame-options"] == "DENY"
    assert "'sha256-" in api.get("/docs").headers["content-security-policy"]


def test_a_non_ascii_key_works(index_copy: Path, tiny_encoder) -> None:
    key = "contraseña-ñandú"
    with client(index_copy, tiny_encoder, api_key=key) as c:
        good = {"Authorization": f"Bearer {key}".encode()}
        assert c.get("/api/info", headers=good).status_code == 200
        assert c.get("/api/info", headers=AUTH).status_code == 401


def test_facets_are_bounded(index_copy: Path, tiny_encoder) -> None:
    with client(index_copy, tiny_encoder, max_facet_fields=2) as c:
        body = c.get("/api/facets").json()
    assert len(body["facets"]) == 2 and body["truncated"] is True and body["fields"] > 2
    assert "categoria" in body["facets"]  # the most used fields are kept


def test_search_reports_the_fusion_used(api, index_copy: Path, tiny_encoder) -> None:
    from beto_search.fusion import resolve

    with SearchEngine.open(index_copy, encoder=tiny_encoder) as engine:
        used = resolve(engine.manifest)
    body = api.get("/api/search", params={"q": "gato"}).json()
    assert body["fusion"] == used.method in FUSIONS and body["alpha"] == used.alpha
    given = api.get("/api/search", params={"q": "gato", "fusion": "rrf", "alpha": 0.5}).json()
    assert given["fusion"] == "rrf" and given["alpha"] == 0.5


def _serve_in_thread(app, settings):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    options = {**server.uvicorn_options(settings, "warning"), "port": port}
    srv = uvicorn.Server(uvicorn.Config(app, **options))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    return srv, thread, port


def _closed_within(port: int, send: bytes, seconds: float) -> bool:
    """Whether the server closes a connection that sent ``send`` and then nothing."""
    with socket.create_connection(("127.0.0.1", port), timeout=seconds) as sock:
        if send:
            sock.sendall(send)
        try:
            while sock.recv(4096):
                pass
        except TimeoutError:
            return False
        except ConnectionResetError:
            pass
    return True


def test_idle_and_half_sent_connections_are_closed(index_copy: Path, tiny_encoder) -> None:
    settings = ServerSettings(index=str(index_copy), read_timeout=1.0, keep_alive=1)
    app = create_app(settings, encoder=tiny_encoder)
    srv, thread, port = _serve_in_thread(app, settings)
    try:
        assert _closed_within(port, b"", 10)  # connected, never sent a byte
        assert _closed_within(port, b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n", 10)
        half_body = (
            b"POST /api/search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"q": '
        )
        assert _closed_within(port, half_body, 10)
        # a request sent whole is answered, and the connection then closes once idle
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            answer = b""
            while chunk := sock.recv(4096):  # until the server closes it (a timeout fails)
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b'{"status":"ok"}')
    finally:
        srv.should_exit = True
        thread.join(timeout=30)
