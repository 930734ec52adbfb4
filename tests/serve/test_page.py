"""The search page (``GET /``) in headless Chromium against a real ``mrag serve``.

One Serve start (auth on) over a small ingested corpus of pictures, text documents and a PDF;
the browser does what a user does: gives the token (a wrong one first), searches by text, reads
the streamed answer and follows a citation, then searches by an uploaded image and with a
modality filter. A screenshot of every step lands in ``tmp_path`` and, when set, in
``$MRAG_TEST_ARTIFACTS``.

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/setup`` installs them).
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

import pytest

from mrag.config import load_config
from tests.doc_media import ASTRONOMY_PAGES, BREAD, VOLCANO, text_pdf
from tests.media import encode, pattern

PAGE = Path(__file__).resolve().parents[2] / "mrag" / "serve" / "static" / "index.html"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
TOKEN = "page-test-token"
WAIT_S = 30

# Distinct pictures (seeded patterns) beside short documents, so a text query returns a mix.
IMAGES = {"pictures/red.png": 31, "pictures/blue.png": 32, "pictures/green.jpg": 33}
DOCUMENTS = {
    "docs/bread.txt": BREAD.encode(),
    "docs/volcano.md": VOLCANO.encode(),
    "docs/astronomy.pdf": text_pdf(ASTRONOMY_PAGES),
}
QUESTION = "How do I bake sourdough bread with a starter?"

needs_chromium = pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason=f"needs {CHROMIUM} and {CHROMEDRIVER} (apt-get install chromium chromium-driver)",
)


@dataclass
class Site:
    url: str
    media: Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def site(ray_local, tmp_path_factory):
    """``mrag serve`` (Ray Serve on 127.0.0.1, token on) over a freshly ingested corpus."""
    from ray import serve

    from mrag.pipelines.ingest import run_ingest
    from mrag.serve.app import run_server

    root = tmp_path_factory.mktemp("page")
    media = root / "media"
    files = {
        **{
            name: encode(pattern(seed), "PNG" if name.endswith(".png") else "JPEG")
            for name, seed in IMAGES.items()
        },
        **DOCUMENTS,
    }
    for name, data in files.items():
        (media / name).parent.mkdir(parents=True, exist_ok=True)
        (media / name).write_bytes(data)
    config = load_config(
        profile="offline", overrides={"db_uri": str(root / "db"), "serve.port": _free_port()}
    )
    summary = run_ingest(config, [str(media)])
    assert summary.ingested == len(files), summary.render()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MRAG_API_TOKEN", TOKEN)  # read when the app is built
        url = run_server(config, blocking=False)
    try:
        yield Site(url=url, media=media)
    finally:
        serve.shutdown()


@pytest.fixture
def browser(tmp_path: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1100,700",  # short: the cited card starts below the fold
        f"--user-data-dir={tmp_path / 'chromium-profile'}",  # not $HOME
        "--no-first-run",
        "--disable-background-networking",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the page's console
    home = tmp_path / "home"  # Chromium's caches and dconf go here, not into $HOME
    service = Service(
        executable_path=str(CHROMEDRIVER),
        log_output=str(tmp_path / "driver.log"),
        env={
            **os.environ,
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_CACHE_HOME": str(home / ".cache"),
        },
    )
    driver = webdriver.Chrome(service=service, options=options)
    try:
        yield driver
    finally:
        driver.quit()


class Screenshots:
    """Each step's screenshot, in ``tmp_path`` and (when set) ``$MRAG_TEST_ARTIFACTS``."""

    def __init__(self, driver, tmp_path: Path) -> None:
        self.driver = driver
        self.dirs = [tmp_path / "screenshots"]
        if os.environ.get("MRAG_TEST_ARTIFACTS"):
            self.dirs.append(Path(os.environ["MRAG_TEST_ARTIFACTS"]) / "search-page")
        for folder in self.dirs:
            folder.mkdir(parents=True, exist_ok=True)
        self.count = 0

    def take(self, step: str) -> None:
        self.count += 1
        first = self.dirs[0] / f"{self.count:02d}-{step}.png"
        assert self.driver.save_screenshot(str(first)), first
        for folder in self.dirs[1:]:
            shutil.copyfile(first, folder / first.name)
        for folder in self.dirs:
            assert (folder / first.name).stat().st_size > 0


def _in_view(driver, element) -> bool:
    return driver.execute_script(
        "const r = arguments[0].getBoundingClientRect();"
        "return r.top >= 0 && r.bottom <= window.innerHeight && r.height > 0;",
        element,
    )


def test_the_page_is_self_contained() -> None:
    """Served as is, behind any route prefix, with no network: no external or root-relative
    URLs, and server text never parsed as HTML."""
    page = PAGE.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert not re.search(r"""["'`]/(v1|healthz|static)""", page)  # relative: v1/search
    for call in ('"v1/search"', '"v1/answer"', '"healthz"'):
        assert call in page
    assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write", page)


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.browser
@needs_chromium
def test_search_page_end_to_end(site: Site, browser, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, WAIT_S)
    shots = Screenshots(browser, tmp_path)
    status = (By.ID, "status")

    def cards():
        return browser.find_elements(By.CSS_SELECTOR, "#results article.hit")

    # 1. The server has a token: the page asks for it. A wrong one is refused and asked again.
    browser.get(site.url + "/")
    assert browser.title == "mrag search"
    token_input = wait.until(ec.visibility_of_element_located((By.ID, "token-input")))
    shots.take("token-prompt")
    token_input.send_keys("wrong-token", Keys.ENTER)
    browser.find_element(By.ID, "query").send_keys(QUESTION, Keys.ENTER)
    wait.until(ec.text_to_be_present_in_element(status, "invalid bearer token"))
    assert browser.find_element(By.ID, "status").get_attribute("data-kind") == "error"
    token_input = wait.until(ec.visibility_of_element_located((By.ID, "token-input")))
    shots.take("wrong-token")

    # 2. The right token: the search that was refused runs again, and fills the grid.
    token_input.send_keys(TOKEN, Keys.ENTER)
    wait.until(ec.text_to_be_present_in_element(status, f'hits for "{QUESTION}" ('))
    assert len(cards()) == 10  # the page's default k; the corpus has more chunks
    assert browser.execute_script("return sessionStorage.getItem('mrag.api_token')") == TOKEN
    thumbnails = browser.find_elements(By.CSS_SELECTOR, "#results article.hit img.thumb")
    assert len(thumbnails) >= len(IMAGES)
    assert all(img.get_attribute("src").startswith("data:image/jpeg;base64,") for img in thumbnails)
    assert all(browser.execute_script("return arguments[0].naturalWidth", i) for i in thumbnails)
    top = cards()[0]
    assert top.get_attribute("id") == "hit-" + top.get_attribute("data-chunk-id")
    assert top.find_element(By.CSS_SELECTOR, ".name").text == "bread.txt"
    assert "sourdough" in top.find_element(By.CSS_SELECTOR, ".snippet").text
    pages = {e.text for e in browser.find_elements(By.CSS_SELECTOR, "#results .hit .page")}
    assert pages == {f"page {n}" for n in range(1, len(ASTRONOMY_PAGES) + 1)}
    shots.take("text-results")

    # 3. The answer streams in (several deltas), with [n] markers as citation links.
    answer = browser.find_element(By.ID, "answer")
    wait.until(lambda d: answer.get_attribute("data-state") in ("done", "error"))
    assert answer.get_attribute("data-state") == "done", browser.find_element(*status).text
    assert int(answer.get_attribute("data-deltas")) > 1
    text = browser.find_element(By.ID, "answer-text").text
    assert "starter" in text.lower()
    links = browser.find_elements(By.CSS_SELECTOR, "#answer-text a.citation")
    assert links and f"[{links[0].get_attribute('data-n')}" in text
    assert browser.find_element(By.ID, "answer-meta").text.startswith("generator extractive")
    shots.take("answer")

    # 4. A citation scrolls to the hit it cites and highlights it.
    link = links[0]
    n = link.get_attribute("data-n")
    source_uri = browser.execute_script(
        "return [...document.querySelectorAll('#answer-sources a.citation')]"
        ".find(a => a.dataset.n === arguments[0]).title",
        n,
    )
    assert source_uri.endswith("bread.txt")  # the sources list names the cited file
    link.click()
    highlighted = wait.until(
        ec.presence_of_element_located((By.CSS_SELECTOR, "#results article.hit.highlight"))
    )
    assert highlighted.get_attribute("data-uri").endswith("bread.txt")
    wait.until(lambda d: _in_view(d, highlighted))
    assert browser.execute_script("return window.scrollY") > 0
    assert len(browser.find_elements(By.CSS_SELECTOR, ".hit.highlight")) == 1
    shots.take("citation")

    # 5. An uploaded image (file picker) finds itself first.
    picture = site.media / "pictures" / "blue.png"
    browser.find_element(By.ID, "image-input").send_keys(str(picture))
    wait.until(ec.text_to_be_present_in_element(status, "hits for image blue.png ("))
    assert browser.find_element(By.ID, "query").get_attribute("value") == ""
    first = cards()[0]
    assert first.get_attribute("data-uri") == str(picture)
    assert first.get_attribute("data-modality") == "image"
    assert float(first.find_element(By.CSS_SELECTOR, ".score").text.split()[-1]) > 0.999
    wait.until(lambda d: answer.get_attribute("data-state") in ("done", "error"))
    shots.take("image-results")

    # 6. An image dropped on the drop zone does the same.
    dropped = site.media / "pictures" / "green.jpg"
    browser.execute_script(
        "const bytes = Uint8Array.from(atob(arguments[0]), (c) => c.charCodeAt(0));"
        "const files = new DataTransfer();"
        "files.items.add(new File([bytes], 'green.jpg', {type: 'image/jpeg'}));"
        "document.getElementById('drop-zone').dispatchEvent("
        "  new DragEvent('drop', {dataTransfer: files, bubbles: true, cancelable: true}));",
        base64.b64encode(dropped.read_bytes()).decode(),
    )
    wait.until(ec.text_to_be_present_in_element(status, "hits for image green.jpg ("))
    assert cards()[0].get_attribute("data-uri") == str(dropped)
    wait.until(lambda d: answer.get_attribute("data-state") in ("done", "error"))

    # 7. Only text: the modality filter leaves the pictures and PDF pages out.
    for modality in ("image", "pdf_page"):
        browser.find_element(By.CSS_SELECTOR, f"input[name=modality][value={modality}]").click()
    browser.find_element(By.ID, "query").send_keys("volcano eruption", Keys.ENTER)
    wait.until(ec.text_to_be_present_in_element(status, 'for "volcano eruption" ('))
    assert {c.get_attribute("data-modality") for c in cards()} == {"text"}
    assert not browser.find_elements(By.CSS_SELECTOR, "#image-preview:not([hidden])")
    shots.take("text-only")
    assert browser.find_element(*status).get_attribute("data-kind") != "error"

    # No script errors on the way (the console's only complaint is the refused wrong token).
    severe = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert any("status of 401" in m for m in severe), severe  # the log is really read
    assert [m for m in severe if "status of 401" not in m] == [], severe
