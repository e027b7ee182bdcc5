"""The search page in a real headless Chromium (Playwright driving Debian's chromium)."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from beto_search import SearchEngine

pytest.importorskip("fastapi", reason="the server extra (fastapi) is not installed")
uvicorn = pytest.importorskip("uvicorn", reason="the server extra (uvicorn) is not installed")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (python) is not installed")
expect = sync_api.expect
# (the page's Content-Security-Policy forbids eval, so waits use locators, not wait_for_function)

server_mod = pytest.importorskip("beto_search.server")
ServerSettings, create_app = server_mod.ServerSettings, server_mod.create_app

pytestmark = pytest.mark.slow

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
EVIL = "<script>window.__pwned = 1</script> El gato negro duerme <b>sobre</b> el tejado."


def chromium_path() -> str | None:
    """BETO_SEARCH_CHROMIUM, else Debian's chromium; None lets Playwright use its own download."""
    for candidate in (
        os.environ.get("BETO_SEARCH_CHROMIUM"),
        "/usr/bin/chromium",
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
    ):
        if candidate and os.path.exists(candidate):
            return candidate
    return None


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as pw:
        try:
            b = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        except Exception as exc:  # any launch failure means "no browser here"
            pytest.skip(
                f"no headless Chromium could be started (install Debian's 'chromium' "
                f"package or run 'playwright install chromium'): {str(exc)[:200]}"
            )
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def site(index_copy: Path, tiny_encoder):
    """A real uvicorn server (in a thread) over the corpus plus a document holding <script>."""
    with SearchEngine.open(index_copy, encoder=tiny_encoder) as engine:
        engine.add(
            [
                {
                    "id": "malicioso",
                    "title": "<img src=x onerror=alert(1)>",
                    "text": EVIL,
                    "metadata": {"categoria": "economía"},
                }
            ]
        )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(ServerSettings(index=str(index_copy)), encoder=tiny_encoder)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_search_page_end_to_end(browser, site: str) -> None:
    page = browser.new_page(viewport={"width": 1100, "height": 720})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(site + "/")
    # type a query: results come as you type (debounced), with <mark> highlights
    page.locator("#q").press_sequentially("gato negro tejado", delay=20)
    page.wait_for_selector("#results li")
    assert page.locator("#results mark").count() > 0
    assert parse_qs(urlparse(page.url).query)["q"] == ["gato negro tejado"]
    # the document holding <script> shows it as text and never runs it
    evil = page.locator('#results li:has(a[data-doc="malicioso"])')
    assert evil.count() == 1
    assert "<script>" in evil.locator(".snippet").inner_text()
    assert evil.locator(".result-title").inner_text() == "<img src=x onerror=alert(1)>"
    assert evil.locator("script, img, b").count() == 0
    assert page.evaluate("window.__pwned") is None
    # switch the mode
    page.get_by_text("léxica", exact=True).click()
    expect(page.locator("#status")).to_contain_text("léxica")
    assert parse_qs(urlparse(page.url).query)["mode"] == ["lexical"]
    # apply a filter from the facets (counts shown)
    facet = page.locator('.facet[data-field="categoria"][data-value="economía"]')
    assert facet.locator(".count").inner_text().isdigit()
    facet.click()
    page.wait_for_url("**f=categoria*")
    expect(page.locator("#active-filters button")).to_have_count(1)
    metas = page.locator("#results li .meta")
    expect(metas.first).to_be_visible()
    for text in metas.all_inner_texts():
        assert "categoria: economía" in text
    assert facet.get_attribute("aria-pressed") == "true"
    # open a document: the passage in context and "similares"
    page.locator("#results .result-title").first.click()
    page.wait_for_selector("#doc:not([hidden]) #doc-text mark.passage")
    page.wait_for_selector("#similar li a")
    assert "doc=" in page.url
    if os.environ.get("BETO_SEARCH_SCREENSHOT"):
        page.screenshot(path=os.environ["BETO_SEARCH_SCREENSHOT"])
    # keyboard: Esc closes the document, "/" goes back to the search box
    page.keyboard.press("Escape")
    page.wait_for_selector("#doc", state="hidden")
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.id") == "q"
    # the URL can be shared: a fresh page opens with the same results
    shared = browser.new_page()
    shared.goto(page.url)
    shared.wait_for_selector("#results li")
    ids = "[...document.querySelectorAll('#results a[data-doc]')].map(a => a.dataset.doc)"
    assert shared.evaluate(ids) == page.evaluate(ids)
    assert shared.locator('input[name="mode"][value="lexical"]').is_checked()
    assert errors == []
    shared.close()
    page.close()


def test_page_is_readable_on_a_phone(browser, site: str) -> None:
    page = browser.new_page(viewport={"width": 390, "height": 800}, is_mobile=True)
    page.goto(site + "/?q=soledad&mode=hybrid")
    page.wait_for_selector("#results li")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scrolling
    page.close()


def test_api_docs_render_offline(browser, site: str) -> None:
    """/docs renders Swagger UI from this server alone (no CDN), under its CSP."""
    pytest.importorskip("fastapi_offline", reason="fastapi-offline (server extra) is missing")
    page = browser.new_page()
    requests: list[str] = []
    problems: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.goto(site + "/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("beto-search")
    expect(page.locator(".opblock-summary-path", has_text="/api/search").first).to_be_visible()
    assert requests and all(u.startswith(site + "/") for u in requests), requests
    assert problems == []
    page.close()


def test_redoc_renders_offline_under_its_csp(browser, site: str) -> None:
    """/redoc renders from this server alone, and its CSP blocks nothing it needs."""
    pytest.importorskip("fastapi_offline", reason="fastapi-offline (server extra) is missing")
    page = browser.new_page()
    requests: list[str] = []
    problems: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    response = page.goto(site + "/redoc")
    assert (
        response is not None
        and "frame-ancestors 'none'" in response.headers["content-security-policy"]
    )
    expect(page.locator("h1").first).to_contain_text("beto-search")
    expect(page.get_by_text("/api/search").first).to_be_attached()
    # ReDoc's footer asks its CDN for a logo: the CSP refuses it, so nothing leaves the server
    elsewhere = [u for u in requests if not u.startswith((site + "/", "blob:"))]
    assert elsewhere == ["https://cdn.redoc.ly/redoc/logo-mini.svg"], elsewhere
    assert problems and all(
        "Content Security Policy" in p and "cdn.redoc.ly" in p for p in problems
    )
    page.close()
