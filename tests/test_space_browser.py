"""The Space in a real headless Chromium: load the page, click an example, run, read the result table.

    pytest tests/test_space_browser.py

Needs Debian's Chromium at /usr/bin/chromium (``apt-get install -y chromium``); Playwright drives it through
``executable_path`` and never downloads a browser. The screenshot lands in pytest's tmp folder (path printed).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from test_space import start_space

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's Chromium: apt-get update && apt-get install -y chromium"
)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    demo, url, _ = start_space(tmp_path_factory.getbasetemp())
    yield url
    demo.close()


@pytest.fixture(scope="module")
def page():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield browser.new_page(viewport={"width": 1400, "height": 1000})
        browser.close()


def test_click_example_run_and_read_the_table(server, page, tmp_path):
    from playwright.sync_api import expect

    page.goto(server, wait_until="domcontentloaded")
    page.get_by_text("PA view, held-out subject synthetic, pose 0").click()
    expect(page.locator("#radiograph")).to_contain_text("pa_synthetic_pose0", timeout=30_000)
    page.locator("#run").click()
    grid = page.locator("#table [role=grid]")
    expect(grid).to_have_attribute("aria-rowcount", "7", timeout=60_000)  # header + the 6 default picks
    text = grid.inner_text()
    for structure in ("right lung", "left lung", "heart", "trachea", "right clavicle", "left clavicle"):
        assert structure in text, (structure, text)
    assert text.index("left lung") < text.index("heart") < text.index("trachea")  # rows in region order
    expect(page.locator("#notes textarea")).to_have_value(re.compile("ground-truth"))  # the example was recognised
    expect(page.locator("#timing textarea")).to_have_value(re.compile(r"VLM [0-9.]+ s .* U-Net [0-9.]+ s"))
    expect(page.locator("#overlay-unet img").first).to_be_visible()
    screenshot = tmp_path / "space.png"
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.stat().st_size > 10_000
    print(f"screenshot: {screenshot}")
