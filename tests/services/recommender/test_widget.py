"""The storefront widget in real headless Chromium (Debian's), driven by Selenium.

It must render product cards with their images, report impressions and a click through
POST /v1/events (which lands on Kafka), and leave a screenshot for people to look at. The API
runs with shopper tokens on, so every call the widget makes must carry the shopper's token.
"""

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from schemas.topics import CLICKS
from services.bus.tail import tail

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.slow]

SCREENSHOT_DIR = Path(os.environ.get("SHELFSIGHT_ARTIFACTS", Path(__file__).resolve().parents[3] / "artifacts"))


def _browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary = shutil.which("chromium")
    driver = shutil.which("chromedriver")
    if not binary or not driver:
        pytest.fail("Chromium is missing: apt-get install chromium chromium-driver (make test does)", pytrace=False)
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,900", "--disable-gpu"):
        options.add_argument(flag)
    # The system chromedriver, so Selenium never tries to download one.
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


def _wait(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out waiting in the browser")


TOKEN_SECRET = "widget-test-token-secret"


@pytest.fixture
def served_with_tokens(api_settings, shop):
    from pydantic import SecretStr

    from tests.services.recommender.conftest import api_for, uvicorn_serving

    app, _ = api_for(api_settings.model_copy(update={"shopper_token_secret": SecretStr(TOKEN_SECRET)}), shop)
    with uvicorn_serving(app) as base:
        yield base


def test_widget_renders_cards_reports_a_click_and_updates_live(served_with_tokens, shop, api_settings):
    from services.recommender.http.tokens import mint

    base = served_with_tokens
    shop.click("ivy", "bag-4", "click")
    browser = _browser()
    try:
        browser.get(f"{base}/?user=ivy&token={mint(TOKEN_SECRET.encode(), 'ivy', int(time.time()) + 600)}")
        cards = lambda: browser.execute_script(  # noqa: E731
            "const w = document.querySelector('shelfsight-recs');"
            "return w && w.shadowRoot ? Array.from(w.shadowRoot.querySelectorAll('.card')).map(c => ({"
            " id: c.dataset.productId, loaded: c.querySelector('img').complete && c.querySelector('img').naturalWidth > 0,"
            " reason: c.querySelector('.reason').textContent, title: c.querySelector('.title').textContent})) : [];"
        )
        shown = _wait(lambda: (lambda c: c if len(c) == 8 and all(x["loaded"] for x in c) else None)(cards()))
        assert all(c["reason"] and c["title"] for c in shown)
        assert "bag-4" not in {c["id"] for c in shown}

        SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
        shot = SCREENSHOT_DIR / "storefront-widget.png"
        browser.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000  # a rendered page, not a blank one

        target = shown[2]["id"]
        browser.execute_script(
            "document.querySelector('shelfsight-recs').shadowRoot.querySelector(`.card[data-product-id='${arguments[0]}']`).click();",
            target,
        )
        _wait(lambda: browser.find_element("id", "last").text.startswith("You clicked"))

        events = [json.loads(m.value) for m in tail(api_settings, api_settings.topic(CLICKS.name), max_messages=9, idle_timeout=10)]
        clicks = [e for e in events if e["kind"] == "click"]
        impressions = [e for e in events if e["kind"] == "impression"]
        assert len(clicks) == 1 and clicks[0]["product_id"] == target and clicks[0]["user_id"] == "ivy"
        assert clicks[0]["context"]["widget"] == "shelfsight-recs" and clicks[0]["context"]["position"] == 2
        assert clicks[0]["context"]["request_id"].startswith("http-")
        assert len(impressions) >= 4 and {e["product_id"] for e in impressions} <= {c["id"] for c in shown}

        # The profiles worker applies the click (its handler here) and the widget re-renders over SSE.
        shop.click("ivy", target, "click")
        _wait(lambda: target not in {c["id"] for c in cards()} and len(cards()) == 8)
    finally:
        browser.quit()
