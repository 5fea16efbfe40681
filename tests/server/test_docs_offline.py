"""`/docs` works on a machine without internet: Swagger UI comes from the package itself, and
real Chromium renders the API from it with nothing loaded from elsewhere."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import requests
from selenium.webdriver.common.by import By

from tests.server.conftest import ServerFactory
from tests.support.browser import chromium, chromium_missing, console_errors, wait_for

pytestmark = pytest.mark.skipif(
    os.environ.get("HANDSPRING_SKIP_BROWSER") == "1", reason="HANDSPRING_SKIP_BROWSER=1"
)


def test_docs_page_names_only_its_own_assets(url: str) -> None:
    page = requests.get(f"{url}/docs", timeout=30)
    assert page.status_code == 200
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sources and all(s.startswith("/") for s in sources), sources
    for source in sources:
        assert requests.get(url + source, timeout=30).status_code == 200, source


def test_swagger_ui_renders_offline(serve: ServerFactory, tmp_path: Path) -> None:
    if (missing := chromium_missing()) is not None:
        pytest.fail(f"{missing}; or set HANDSPRING_SKIP_BROWSER=1 to skip the browser tests")
    with serve() as base, chromium(tmp_path / "profile") as driver:
        driver.get(f"{base}/docs")
        title = wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, ".info .title"))
        assert "Handspring" in title[0].text
        operations = wait_for(
            driver, lambda d: d.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")
        )
        paths = {op.text.replace("\u200b", "") for op in operations}
        assert {"/v1/embeddings", "/embed", "/predict", "/vectorize"} <= paths
        assert console_errors(driver) == []
