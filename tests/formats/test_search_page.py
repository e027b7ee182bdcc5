"""The HTTP API and the search page name a PDF hit's page and a DOCX hit's section."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from beto_search import SearchEngine
from tests.encoders import HashEncoder

pytest.importorskip("fastapi", reason="the server extra (fastapi) is not installed")
from fastapi.testclient import TestClient

from beto_search.server import ServerSettings, create_app


@pytest.fixture
def index(sample_dir: Path, tmp_path: Path) -> Path:
    idx = tmp_path / "idx"
    with SearchEngine.open(idx, encoder=HashEncoder()) as engine:
        engine.ingest([sample_dir / "informe.pdf", sample_dir / "memoria.docx"])
    return idx


def test_api_hits_carry_page_and_section(index: Path) -> None:
    app = create_app(ServerSettings(index=str(index)), encoder=HashEncoder())
    with TestClient(app, base_url="http://127.0.0.1") as c:
        res = c.get("/api/search", params={"q": "pingüinos sardinas", "mode": "lexical", "k": 1})
        assert res.status_code == 200
        assert res.json()["results"][0]["page"] == 3
        res = c.get("/api/search", params={"q": "cuota socios", "mode": "lexical", "k": 1})
        assert res.json()["results"][0]["section"] == "Capítulo 1 › Artículo 2"


@pytest.mark.slow
def test_search_page_shows_page(index: Path) -> None:
    uvicorn = pytest.importorskip("uvicorn")
    sync_api = pytest.importorskip("playwright.sync_api")
    chromium = os.environ.get("BETO_SEARCH_CHROMIUM") or shutil.which("chromium")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(ServerSettings(index=str(index)), encoder=HashEncoder())
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
            time.sleep(0.05)
        with sync_api.sync_playwright() as pw:
            try:
                browser = pw.chromium.launch(
                    executable_path=chromium, args=["--headless", "--no-sandbox", "--disable-gpu"]
                )
            except Exception as exc:  # any launch failure means "no browser here"
                pytest.skip(f"no headless Chromium could be started: {str(exc)[:200]}")
            try:
                page = browser.new_page()
                page.goto(f"http://127.0.0.1:{port}/?q=ping%C3%BCinos+sardinas&mode=lexical")
                page.wait_for_selector("#results li")
                first = page.locator("#results li").first
                assert first.locator(".meta .where").inner_text() == "p. 3"
                page.goto(f"http://127.0.0.1:{port}/?q=cuota+socios&mode=lexical")
                page.wait_for_selector("#results li .where")
                where = page.locator("#results li").first.locator(".where").inner_text()
                assert where == "§ Capítulo 1 › Artículo 2"
            finally:
                browser.close()
    finally:
        server.should_exit = True
        thread.join(timeout=30)
