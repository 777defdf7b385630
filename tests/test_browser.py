"""The demo page in a real browser: Debian's headless Chromium, driven by
Selenium through Debian's chromedriver, against the real service on tiny
trained runs (the `service` fixture, shared with test_serving.py).

The page is JavaScript building cards from JSON, so only a browser shows
that it works: the user picked in its own form, history and top-10 cards
drawn, their images fetched and decoded. `make test` installs the browser
(.ci/install_chromium); where it cannot, this module skips and says why.
"""

import json
import struct
import urllib.request
from pathlib import Path

import pytest

from tiny_runs import REPO

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = Path(REPO) / "test-artifacts"
SCREENSHOT = ARTIFACTS / "serve_page.png"
K = 10


def skip_without_chromium():
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
    if not missing:
        return
    reason = ARTIFACTS / "chromium-install.txt"  # .ci/install_chromium's account
    why = (reason.read_text().strip() if reason.is_file() else
           f"{' and '.join(missing)} missing (`make test` installs Debian's chromium and "
           "chromium-driver when run as root with apt-get; see .ci/install_chromium)")
    pytest.skip(f"chromium not installable here: {why}")


@pytest.fixture(scope="module")
def browser():
    skip_without_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    options = webdriver.ChromeOptions()
    # both paths given: Selenium Manager (which would download a browser) never runs
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--window-size=1280,1400",
                 "--hide-scrollbars"):
        options.add_argument(flag)
    ARTIFACTS.mkdir(exist_ok=True)
    driver = webdriver.Chrome(options=options, service=DriverService(
        executable_path=str(CHROMEDRIVER), log_output=str(ARTIFACTS / "chromedriver.log")))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def get_json(url):
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


# every card of a row: its item id, whether its image is decoded and whether
# it wears the "new" badge
CARDS = """
return Array.from(document.querySelectorAll('#' + arguments[0] + ' .card')).map((c) => {
  const img = c.querySelector('img');
  const badge = c.querySelector('.badge');
  return {item: Number(c.dataset.item), src: img ? img.getAttribute('src') : null,
          loaded: !!img && img.complete && img.naturalWidth > 0,
          badge: badge ? badge.textContent : null};
});
"""


def test_picking_a_user_shows_history_and_top_10_cards_with_images(browser, service):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    browser.get(service.url + "/")
    wait = WebDriverWait(browser, 20)
    # the page filled its user list from /users
    wait.until(lambda d: len(Select(d.find_element(By.ID, "users")).options) > 1)
    users = Select(browser.find_element(By.ID, "users"))
    # the second user: choosing it is a change (the first is preselected), and the page
    # copies its id into the form
    users.select_by_index(1)
    user = int(users.first_selected_option.get_attribute("value"))
    assert browser.find_element(By.ID, "user").get_attribute("value") == str(user)
    browser.find_element(By.CSS_SELECTOR, "#pick button[type=submit]").click()

    def drawn(driver):
        recs = driver.execute_script(CARDS, "rec-cards")
        hist = driver.execute_script(CARDS, "history-cards")
        if len(recs) == K and hist and all(c["loaded"] for c in recs + hist):
            return recs, hist
        return False

    try:
        recs, hist = wait.until(drawn)
    finally:
        browser.save_screenshot(str(SCREENSHOT))  # also when it failed: what the page showed
    # the cards are the service's answer for that user, in order
    expected = get_json(f"{service.url}/recommend?user={user}&k={K}")
    assert [c["item"] for c in recs] == [i["item_id"] for i in expected["items"]]
    # a "new" badge on exactly the items the service calls new
    assert [c["badge"] for c in recs] == ["new" if i["new"] else None for i in expected["items"]]
    assert all(c["src"] == f"/images/{c['item']}" for c in recs + hist)
    history = get_json(f"{service.url}/users/{user}")["history"]
    assert [c["item"] for c in hist] == [h["item_id"] for h in history]
    assert browser.find_element(By.ID, "history-title").text.startswith(
        f"Recent history of user {user}")
    assert browser.find_element(By.ID, "recs-title").text.startswith(f"Top {K} of ")
    assert "error" not in browser.find_element(By.ID, "message").get_attribute("class")
    # the address now names the user, so the view can be shared
    assert browser.current_url.endswith(f"/?user={user}")

    data = SCREENSHOT.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk
    assert (width, height) == tuple(browser.execute_script(
        "return [window.innerWidth * devicePixelRatio, window.innerHeight * devicePixelRatio]"))
    from PIL import Image

    with Image.open(SCREENSHOT) as image:  # not blank: many colours (cards, photos, text)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is None or len(colours) > 100
