"""The Dagster UI of the deployed app in a real headless Chromium: refused without login, assets and lineage with it.

Runs against the same local Heroku app as tests/deploy/test_heroku_processes.py (after it, by
file name, so the graph shows materialised assets). Debian's chromium and chromium-driver are
installed by scripts/test. ``PIPELINE_UI_SCREENSHOT=docs/dagster-ui.png`` keeps the screenshot.
"""

from __future__ import annotations

import base64
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.deploy.heroku_app import HerokuApp

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ASSETS = (
    "crawled_pages",
    "vector_index",
    "retrieved_candidates",
    "reranked_candidates",
    "ranked_context_sets",
    "answers",
)
GROUPS = ("Global asset lineage", "ingest", "retrieve", "rerank", "context", "answer", "evaluate")
# The UI loads its code and then its data over GraphQL; on a loaded 2-core machine that can take a while.
UI_TIMEOUT_SECONDS = 120


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    options = Options()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1600,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _page_text(driver: webdriver.Chrome) -> str:
    return driver.find_element(By.TAG_NAME, "body").text


def test_the_ui_asks_for_credentials_then_shows_the_assets_and_their_lineage(heroku_app: HerokuApp, browser, tmp_path):
    browser.get(heroku_app.url + "/assets")
    # Headless Chromium cancels the login prompt and shows nothing; the navigation's status tells.
    assert browser.execute_script("return performance.getEntriesByType('navigation')[0].responseStatus") == 401
    assert not any(asset in _page_text(browser) for asset in ASSETS)

    # Basic credentials on every request the page makes (documents, GraphQL, websocket), as a
    # browser sends them after the login prompt; headless Chromium shows no prompt.
    token = base64.b64encode(":".join(heroku_app.auth).encode()).decode()
    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {token}"}})

    browser.get(heroku_app.url + "/assets")
    wait = WebDriverWait(browser, UI_TIMEOUT_SECONDS)
    wait.until(lambda driver: all(asset in _page_text(driver) for asset in ASSETS))

    browser.get(heroku_app.url + "/asset-groups")
    # The global lineage graph: one node per stage's asset group, edges (SVG paths) between them.
    wait.until(lambda driver: all(group in _page_text(driver) for group in GROUPS))
    wait.until(lambda driver: len(driver.find_elements(By.CSS_SELECTOR, "svg path")) >= len(GROUPS) - 2)
    screenshot = tmp_path / "dagster-ui.png"
    assert browser.save_screenshot(str(screenshot))
    assert screenshot.stat().st_size > 10_000
    if keep := os.environ.get("PIPELINE_UI_SCREENSHOT"):
        shutil.copyfile(screenshot, Path(keep))
