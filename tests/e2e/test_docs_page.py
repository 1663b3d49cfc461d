"""``/docs`` serves Swagger UI from the package, under the dashboard's Content-Security-Policy:
it works on a host without internet, and nothing on the page where operators paste admin
tokens comes from a CDN. Checked over HTTP, and in a real browser (Debian's Chromium, driven by
Playwright; skipped where either is missing, except under ``CI=true``)."""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from api_server import LiveApi

from cloudstate.api.app import UI_HEADERS

CHROMIUM = Path("/usr/bin/chromium")
IN_CI = os.environ.get("CI", "").lower() == "true"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApi]:
    with LiveApi(tmp_path_factory.mktemp("docs")) as live:
        yield live


def test_the_docs_page_and_its_assets_come_from_this_origin_under_the_dashboards_csp(
    api: LiveApi,
) -> None:
    client = api.client()
    page = client.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-security-policy"] == UI_HEADERS["Content-Security-Policy"]
    assert not re.search(r"(src|href)=\"(https?:)?//", page.text)  # nothing from elsewhere
    assert "<script>" not in page.text  # no inline code (the CSP would refuse it)
    sources = re.findall(r"(?:src|href)=\"([^\"]+)\"", page.text)
    assert sources
    for source in sources:
        asset = client.get(f"/{source}")
        assert asset.status_code == 200, source
        assert asset.headers["content-security-policy"] == UI_HEADERS["Content-Security-Policy"]
    licence = client.get("/docs/assets/LICENSE")
    assert licence.status_code == 200
    assert "Apache License" in licence.text


def _missing() -> str | None:
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is absent (apt-get install -y chromium)"
    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed (pip install -e '.[dev]')"
    return None


def test_swagger_ui_renders_the_api_in_a_browser_without_any_request_elsewhere(
    api: LiveApi,
) -> None:
    """The page shows the document's operations, logs no error (a CSP violation is one), and
    every request it makes goes to this server."""
    missing = _missing()
    if missing:
        if IN_CI:
            pytest.fail(f"{missing} (CI=true requires it)")
        pytest.skip(missing)
    from playwright.sync_api import expect, sync_playwright

    problems: list[str] = []
    requested: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            tab = browser.new_page()
            tab.on("pageerror", lambda error: problems.append(f"exception: {error}"))
            tab.on(
                "console",
                lambda m: problems.append(f"console: {m.text}") if m.type == "error" else None,
            )
            tab.on("request", lambda request: requested.append(request.url))
            tab.goto(f"{api.url}/docs")
            expect(tab.locator(".swagger-ui .info .title")).to_contain_text("cloudstate")
            expect(tab.locator(".opblock-summary-path").first).to_be_visible()
            assert tab.locator(".opblock").count() > 20
        finally:
            browser.close()
    assert problems == []
    assert requested
    assert all(url.startswith(api.url) for url in requested), requested
