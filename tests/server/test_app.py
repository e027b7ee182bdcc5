"""`beto-search serve`: the JSON API against the library, errors, auth, limits, processes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from beto_search import SearchEngine
from beto_search.index.locking import WriteLock
from tests.paths import ROOT

pytest.importorskip("fastapi", reason="the server extra (fastapi) is not installed")
httpx = pytest.importorskip("httpx", reason="httpx is needed to call the server")
TestClient = pytest.importorskip("fastapi.testclient").TestClient
server = pytest.importorskip("beto_search.server")
ServeError, ServerSettings = server.ServeError, server.ServerSettings
check_bind, create_app = server.check_bind, server.create_app

KEY = "s3cr3t-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
CLI = [sys.executable, "-m", "beto_search.cli"]


BASE = "http://127.0.0.1"  # a Host the server answers (test_hardening.py checks other names)


def client(index: Path, encoder, **settings):
    app = create_app(ServerSettings(index=str(index), **settings), encoder=encoder)
    return TestClient(app, base_url=BASE)


@pytest.fixture
def api(index_copy: Path, tiny_encoder):
    """A client of a server with a key and public reads over a private index copy."""
    with client(index_copy, tiny_encoder, api_key=KEY, public_read=True, write_wait=0.2) as c:
        yield c


# ----- shapes equal the library's -------------------------------------------------------------
@pytest.mark.parametrize("mode", ["hybrid", "semantic", "lexical"])
def test_search_equals_library(api, index_copy: Path, tiny_encoder, mode: str) -> None:
    q = "¿Quién escribió Cien años de soledad?"
    with SearchEngine.open(index_copy, encoder=tiny_encoder) as engine:
        expected = [h.to_dict() for h in engine.search(q, k=5, mode=mode)]
    got = api.get("/api/search", params={"q": q, "k": 5, "mode": mode})
    assert got.status_code == 200
    body = got.json()
    assert body["query"] == q and body["mode"] == mode
    results = body["results"]
    assert len(results) == len(expected) == 5
    for r, e in zip(results, expected):
        assert not r["source"].startswith("/")  # relative to the ingested folder
        assert e["source"].endswith("/" + r["source"])
        r.pop("source"), e.pop("source")
        for d in (r, e):
            d["scores"] = [x or 0.0 for x in (d.pop("score"), *d.pop("explain").values())]
        assert r.pop("scores") == pytest.approx(e.pop("scores"), rel=1e-4, abs=1e-5)
        assert r == e
    posted = api.post("/api/search", json={"q": q, "k": 5, "mode": mode}).json()
    assert [r["doc_id"] for r in posted["results"]] == [r["doc_id"] for r in results]


def test_filters_pagination_and_source_glob(api) -> None:
    full = api.get("/api/search", params={"q": "economía precios", "k": 10}).json()["results"]
    page2 = api.get("/api/search", params={"q": "economía precios", "k": 5, "offset": 5}).json()
    assert [r["doc_id"] for r in page2["results"]] == [r["doc_id"] for r in full[5:10]]
    filtered = api.get("/api/search", params={"q": "precios", "where": "categoria:economía"})
    assert filtered.status_code == 200
    assert filtered.json()["results"]
    assert all(r["metadata"]["categoria"] == "economía" for r in filtered.json()["results"])
    body = {"q": "precios", "where": {"categoria": "economía"}}
    assert api.post("/api/search", json=body).json()["results"] == filtered.json()["results"]
    glob = api.get("/api/search", params={"q": "contrato", "source": "derecho/*"}).json()
    assert glob["results"] and all(r["source"].startswith("derecho/") for r in glob["results"])


def test_documents_similar_info_facets_health(api, index_copy: Path) -> None:
    doc_id = "literatura/cien-anos-de-soledad.txt"
    doc = api.get(f"/api/documents/{doc_id}").json()
    assert doc["id"] == doc_id and doc["source"] == doc_id and "Macondo" in doc["text"]
    assert doc["chunks"] and all(c["end"] > c["start"] for c in doc["chunks"])
    sim = api.get(f"/api/similar/{doc_id}", params={"k": 3}).json()
    assert len(sim["results"]) == 3 and doc_id not in [r["doc_id"] for r in sim["results"]]
    info = api.get("/api/info")
    assert info.json()["documents"] > 0 and str(index_copy.parent) not in info.text
    facets = api.get("/api/facets").json()["facets"]
    assert {"value": "soporte", "count": 6} in facets["categoria"]
    assert api.get("/api/health").json() == {"status": "ok"}
    page = api.get("/")
    assert (
        page.status_code == 200 and "script-src 'self'" in page.headers["content-security-policy"]
    )
    assert "https://" not in page.text and "http://" not in page.text  # no CDN
    assert api.get("/static/app.js").status_code == 200


def test_openapi_docs_are_served_offline(api) -> None:
    """/docs (Swagger UI) and /redoc load every file from this server, none from a CDN."""
    pytest.importorskip("fastapi_offline", reason="fastapi-offline (server extra) is missing")
    assert api.get("/openapi.json").json()["paths"]["/api/search"]
    for page, scripts in [
        ("/docs", ["swagger-ui-bundle.js", "swagger-ui.css"]),
        ("/redoc", ["redoc.standalone.js"]),
    ]:
        html = api.get(page)
        assert html.status_code == 200, page
        assert "https://" not in html.text and "http://" not in html.text, page  # no CDN
        for name in scripts:
            assert f'"/static-offline-docs/{name}"' in html.text
            assert api.get(f"/static-offline-docs/{name}").status_code == 200
    assert '"validatorUrl": null' in api.get("/docs").text  # no badge from the validator's site


# ----- errors ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "params",
    [
        {"q": ""},
        {"q": "   "},
        {"q": "x", "k": 0},
        {"q": "x", "k": 101},
        {"q": "x", "k": "diez"},
        {"q": "x", "offset": 95, "k": 10},
        {"q": "x" * 1001},
        {"q": "x", "mode": "fuzzy"},
        {"q": "x", "fusion": "magic"},
        {"q": "x", "alpha": 2},
        {"q": "x", "where": "sin-dos-puntos"},
        {"q": "x", "where": "clave mala:1"},
        {},
    ],
)
def test_bad_search_is_400(api, params: dict) -> None:
    r = api.get("/api/search", params=params)
    assert r.status_code == 400
    assert set(r.json()) == {"error"} and r.json()["error"].endswith(".")
    assert "Traceback" not in r.text and "/tmp" not in r.text and "/work" not in r.text


def test_error_statuses(api) -> None:
    assert api.get("/api/documents/no-such").status_code == 404
    assert api.get("/api/similar/no-such").status_code == 404
    assert api.get("/api/nothing-here").json() == {"error": "There is no such page or endpoint."}
    assert api.put("/api/search").status_code == 405
    assert api.post("/api/search", content=b"{not json").status_code == 400
    assert api.post("/api/search", json=[1, 2]).status_code == 400
    assert api.post("/api/documents", content=b"[", headers=AUTH).status_code == 400
    assert api.post("/api/documents", json=[{"id": "a"}], headers=AUTH).status_code == 400
    assert api.post("/api/documents", json=[], headers=AUTH).status_code == 400
    assert api.delete("/api/documents/no-such", headers=AUTH).status_code == 404


def test_limits_413(index_copy: Path, tiny_encoder) -> None:
    with client(index_copy, tiny_encoder, api_key=KEY, max_body_bytes=2000, max_documents=3) as c:
        big = c.post("/api/documents", json=[{"id": "a", "text": "x" * 5000}], headers=AUTH)
        assert big.status_code == 413 and "limit" in big.json()["error"]
        many = [{"id": f"d{i}", "text": "hola"} for i in range(4)]
        assert c.post("/api/documents", json=many, headers=AUTH).status_code == 413

        def chunked():  # no Content-Length: the limit counts the streamed bytes
            for _ in range(10):
                yield b" " * 500

        streamed = c.post("/api/search", content=chunked(), headers=AUTH)
        assert streamed.status_code == 413


def test_write_while_another_process_writes_is_409(api, index_copy: Path) -> None:
    with WriteLock(index_copy):  # flock: a second open file conflicts even in this process
        r = api.post("/api/documents", json=[{"id": "w", "text": "hola"}], headers=AUTH)
        assert r.status_code == 409 and "being written" in r.json()["error"]
        assert "/" not in r.json()["error"].replace("--wait", "")
        assert api.delete("/api/documents/faq-01", headers=AUTH).status_code == 409
    assert api.get("/api/documents/w").status_code == 404  # nothing half-written


# ----- auth -----------------------------------------------------------------------------------
def test_without_a_key_reads_work_and_writes_are_403(index_copy: Path, tiny_encoder) -> None:
    with client(index_copy, tiny_encoder) as c:
        assert c.get("/api/search", params={"q": "gato"}).status_code == 200
        r = c.post("/api/documents", json=[{"id": "a", "text": "hola"}], headers=AUTH)
        assert r.status_code == 403 and "without an API key" in r.json()["error"]
        assert c.delete("/api/documents/faq-01").status_code == 403


def test_key_guards_reads_and_writes(index_copy: Path, tiny_encoder) -> None:
    with client(index_copy, tiny_encoder, api_key=KEY) as c:
        for path in ["/api/search?q=gato", "/api/info", "/api/facets", "/api/documents/faq-01"]:
            assert c.get(path).status_code == 401
            assert c.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
            assert c.get(path, headers={"Authorization": KEY}).status_code == 401  # no scheme
            assert c.get(path, headers=AUTH).status_code == 200
        assert c.get("/api/health").status_code == 200 and c.get("/").status_code == 200
        doc = [{"id": "nuevo", "text": "El gato duerme en el tejado.", "metadata": {"t": "x"}}]
        assert c.post("/api/documents", json=doc).status_code == 401
        assert (
            c.post("/api/documents", json=doc, headers={"Authorization": "Bearer no"}).status_code
            == 401
        )
        added = c.post("/api/documents", json=doc, headers=AUTH)
        assert added.status_code == 200 and added.json()["added"] == 1
        assert c.get("/api/documents/nuevo", headers=AUTH).json()["metadata"] == {"t": "x"}
        assert c.delete("/api/documents/nuevo").status_code == 401
        assert c.delete("/api/documents/nuevo", headers=AUTH).json() == {"deleted": ["nuevo"]}
        assert c.get("/api/documents/nuevo", headers=AUTH).status_code == 404


def test_public_read_and_read_only(index_copy: Path, tiny_encoder) -> None:
    with client(index_copy, tiny_encoder, api_key=KEY, public_read=True) as c:
        assert c.get("/api/search?q=gato").status_code == 200
        assert c.post("/api/documents", json=[{"id": "a", "text": "b"}]).status_code == 401
    with client(index_copy, tiny_encoder, api_key=KEY, read_only=True) as c:
        r = c.post("/api/documents", json=[{"id": "a", "text": "b"}], headers=AUTH)
        assert r.status_code == 403 and "read-only" in r.json()["error"]


def test_cors_off_unless_asked(index_copy: Path, tiny_encoder) -> None:
    origin = {"Origin": "https://ejemplo.org"}
    with client(index_copy, tiny_encoder) as c:
        assert "access-control-allow-origin" not in c.get("/api/health", headers=origin).headers
    with client(index_copy, tiny_encoder, cors=["https://ejemplo.org"]) as c:
        r = c.get("/api/health", headers=origin)
        assert r.headers["access-control-allow-origin"] == "https://ejemplo.org"


def test_non_loopback_needs_a_key(index_copy: Path, cli_run) -> None:
    keyless = ServerSettings(index=str(index_copy))
    assert check_bind("127.0.0.1", keyless) is None and check_bind("::1", keyless) is None
    with pytest.raises(ServeError, match="without an API key"):
        check_bind("0.0.0.0", keyless)
    assert check_bind("0.0.0.0", ServerSettings(index=str(index_copy), api_key=KEY)) is None
    warning = check_bind("192.168.1.5", ServerSettings(index=str(index_copy), read_only=True))
    assert warning and "READ-ONLY" in warning
    result = cli_run("serve", "--index", index_copy, "--host", "0.0.0.0", "--port", "1")
    assert result.exit_code == 1 and "without an API key" in result.output
    missing = cli_run("serve", "--index", index_copy.parent / "nada")
    assert missing.exit_code == 1 and "no index" in missing.output


# ----- escaping -------------------------------------------------------------------------------
def test_script_in_a_document_is_text(api) -> None:
    evil = "<script>alert('x')</script> El gato <b>negro</b> duerme."
    r = api.post(
        "/api/documents", json=[{"id": "evil", "title": "<img src=x>", "text": evil}], headers=AUTH
    )
    assert r.status_code == 200
    hit = api.get("/api/search", params={"q": "gato negro", "mode": "lexical"}).json()["results"][0]
    assert hit["doc_id"] == "evil" and hit["text"] == evil  # JSON carries the raw text
    assert "<script>" not in hit["highlight"] and "&lt;script&gt;" in hit["highlight"]
    assert hit["highlight"].count("<mark>") >= 2
    stripped = hit["highlight"].replace("<mark>", "").replace("</mark>", "")
    assert "<" not in stripped  # <mark> is the only markup
    similar = api.get("/api/similar/faq-01", params={"k": 100}).json()["results"]
    evil_hit = next(h for h in similar if h["doc_id"] == "evil")
    assert "<" not in evil_hit["highlight"] and "&lt;script&gt;" in evil_hit["highlight"]


# ----- micro-batching -------------------------------------------------------------------------
def test_concurrent_queries_share_encoder_calls(index_copy: Path, tiny_encoder) -> None:
    app = create_app(
        ServerSettings(index=str(index_copy), batch_window_ms=50), encoder=tiny_encoder
    )
    queries = [f"consulta número {i} sobre economía" for i in range(8)]

    async def run() -> list:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as c:
            return await asyncio.gather(
                *[
                    c.get("/api/search", params={"q": q, "mode": "semantic", "k": 3})
                    for q in queries
                ]
            )

    responses = asyncio.run(run())
    assert all(r.status_code == 200 for r in responses)
    batcher = app.state.service.batcher
    assert batcher.queries == 8 and batcher.calls < 8
    with SearchEngine.open(index_copy, encoder=tiny_encoder) as engine:
        for q, r in zip(queries, responses):
            expected = [h.doc_id for h in engine.search(q, k=3, mode="semantic")]
            assert [h["doc_id"] for h in r.json()["results"]] == expected


# ----- real processes -------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def live_server(index_copy: Path, tiny_model: Path):
    """`beto-search serve` in a subprocess; yields (base_url, process); always killed."""
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "BETO_SEARCH_API_KEY": KEY}
    # an upsert crossing 200 chunks re-tunes the fusion (seconds): not what these tests time
    env["BETO_SEARCH_AUTOTUNE"] = "0"
    proc = subprocess.Popen(
        [
            *CLI,
            "serve",
            "--index",
            str(index_copy),
            "--port",
            str(port),
            "--model",
            str(tiny_model),
            "--public-read",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the server exited: {proc.stdout.read()[-2000:]}")
            try:
                if httpx.get(f"{base}/api/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("the server did not start within 90 s")
            time.sleep(0.2)
        yield base, proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


@pytest.mark.slow
def test_server_sees_another_process_ingest(
    live_server, index_copy: Path, tiny_model: Path, tmp_path: Path
) -> None:
    base, _ = live_server
    q = {"q": "ornitorrinco tasmano", "mode": "lexical"}
    assert httpx.get(f"{base}/api/search", params=q).json()["results"] == []
    folder = tmp_path / "nuevos"
    folder.mkdir()
    (folder / "orni.txt").write_text("Ornitorrinco\n\nEl ornitorrinco tasmano nada de noche.")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    cmd = CLI
    subprocess.run(
        [*cmd, "ingest", str(folder), "--index", str(index_copy), "--model", str(tiny_model), "-q"],
        env=env,
        check=True,
        capture_output=True,
    )
    for mode in ("lexical", "hybrid", "semantic"):
        hits = httpx.get(f"{base}/api/search", params={**q, "mode": mode, "k": 50}).json()
        assert "orni.txt" in [r["doc_id"] for r in hits["results"]], mode
    (folder / "orni.txt").write_text("Ornitorrinco\n\nEl ornitorrinco tasmano come gambas.")
    subprocess.run(
        [*cmd, "ingest", str(folder), "--index", str(index_copy), "--model", str(tiny_model), "-q"],
        env=env,
        check=True,
        capture_output=True,
    )
    assert "gambas" in httpx.get(f"{base}/api/documents/orni.txt").json()["text"]
    subprocess.run(
        [*cmd, "delete", "orni.txt", "--index", str(index_copy)],
        env=env,
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [*cmd, "compact", "--index", str(index_copy)], env=env, check=True, capture_output=True
    )
    for mode in ("lexical", "hybrid", "semantic"):
        hits = httpx.get(f"{base}/api/search", params={**q, "mode": mode, "k": 50}).json()
        assert "orni.txt" not in [r["doc_id"] for r in hits["results"]], mode
    assert httpx.get(f"{base}/api/documents/orni.txt").status_code == 404


@pytest.mark.slow
def test_sigterm_mid_write_finishes_or_fails_cleanly(
    live_server, index_copy: Path, tiny_encoder
) -> None:
    base, proc = live_server
    docs = [{"id": f"lote-{i}", "text": f"Documento {i} del lote. " * 80} for i in range(300)]
    outcome: dict = {}

    def post() -> None:
        try:
            r = httpx.post(
                f"{base}/api/documents",
                json=docs,
                headers={"Authorization": f"Bearer {KEY}"},
                timeout=120,
            )
            outcome["status"] = r.status_code
            outcome["body"] = r.text
        except httpx.HTTPError as exc:
            outcome["error"] = type(exc).__name__

    t = threading.Thread(target=post)
    t.start()
    time.sleep(1.0)  # the write is under way (300 long documents take seconds to encode)
    proc.send_signal(signal.SIGTERM)
    t.join(timeout=150)
    # uvicorn finishes in-flight requests, runs the shutdown (engine closed), then re-raises the
    # signal (uvicorn >= 0.29), so the exit status is -SIGTERM or 0 depending on its version
    assert proc.wait(timeout=150) in (0, -signal.SIGTERM)
    out = proc.stdout.read()
    assert "Traceback" not in out and "Finished server process" in out, out[-2000:]
    if "status" in outcome:
        assert outcome["status"] == 200, outcome
        assert json.loads(outcome["body"])["added"] == 300
    with SearchEngine.open(index_copy, encoder=tiny_encoder) as engine:
        assert engine.verify() == []
        stored = sum(engine.get_document(d["id"]) is not None for d in docs)
    if outcome.get("status") == 200:
        assert stored == 300


def test_python_m_cli_sees_serve() -> None:
    """`python -m beto_search.cli` runs cli.py's __main__ block: it must come after every command."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [*CLI, "serve", "--help"], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0 and "--api-key" in out.stdout, out.stderr[-1000:]


def test_worker_processes_build_the_app_from_the_environment(
    index_copy: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--workers N: uvicorn imports the factory in each worker; the settings travel in the env."""
    from beto_search.server.app import CONFIG_ENV, app_from_env

    settings = ServerSettings(index=str(index_copy), api_key=KEY, model=str(tiny_model))
    monkeypatch.setenv(CONFIG_ENV, settings.to_env())
    with TestClient(app_from_env(), base_url=BASE) as c:
        assert c.get("/api/search", params={"q": "gato"}).status_code == 401
        assert c.get("/api/search", params={"q": "gato"}, headers=AUTH).status_code == 200
