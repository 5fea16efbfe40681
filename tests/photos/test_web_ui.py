"""The photo-search page in headless Chromium (Debian's, through Selenium) against a real
uvicorn server: the library as the start page (months, jump, on this day, folders,
infinite scroll), search and "similar", every filter in the URL with reload, back and
forward, the viewer (n of N, details, zoom, files gone or changed), loading and error
states, signing in at page open, duplicates, keyboard, accessibility (axe-core) in light
and dark mode, and screenshots whose tiles must show the photos the page says they are.

Every wait is on a state of the page (data attributes, elements shown), never a delay."""

from __future__ import annotations

import contextlib
import datetime
import importlib.resources
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import uvicorn
from PIL import ExifTags, Image
from PIL.TiffImagePlugin import IFDRational
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select

from handspring.embedder import Model
from handspring.photos.indexing.indexer import Indexer
from handspring.photos.search.searcher import Searcher
from handspring.photos.stores.store import open_store
from handspring.photos.web.app import create_app
from handspring.photos.web.auth import AuthConfig
from tests.photos.conftest import (
    PhotoModels,
    WebLibrary,
    assert_ranked,
    index_options,
    serve_library,
)
from tests.support.browser import (
    chromium,
    chromium_missing,
    console_errors,
    screenshot,
    wait_for,
)
from tests.support.images import photo_array
from tests.support.live_server import running
from tests.support.photo_library import exif_block

# The README's test command installs Chromium, so a missing browser fails these tests
# rather than skipping them unseen; HANDSPRING_SKIP_BROWSER=1 opts out on purpose.
pytestmark = pytest.mark.skipif(
    os.environ.get("HANDSPRING_SKIP_BROWSER") == "1", reason="HANDSPRING_SKIP_BROWSER=1"
)

QUERY = "a red tulip in a garden"
SEARCH_PAGE = 30  # the page's own page sizes (app.js)
LIBRARY_PAGE = 40


@pytest.fixture(scope="module")
def server(web_library: WebLibrary, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serve_library(web_library, tmp_path_factory.mktemp("thumbnails")) as url:
        yield url


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    if (missing := chromium_missing()) is not None:
        pytest.fail(f"{missing}; or set HANDSPRING_SKIP_BROWSER=1 to skip the browser tests")
    with chromium(tmp_path_factory.mktemp("chromium-profile")) as driver:
        driver.set_script_timeout(60)
        yield driver


@pytest.fixture
def page(browser: WebDriver, server: str) -> Iterator[WebDriver]:
    open_page(browser, server)
    browser.get_log("browser")  # start each test with an empty console
    yield browser
    assert console_errors(browser) == []


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots go: $HANDSPRING_SCREENSHOTS (the docs' images), else a temp folder."""
    folder = os.environ.get("HANDSPRING_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        return Path(folder)
    return tmp_path_factory.mktemp("screenshots")


# ------------------------------------------------------------------ helpers


def grid_state(driver: WebDriver) -> tuple[int, str]:
    """(list number, 'loading' | 'more' | 'done' | 'error') of the grid."""
    grid = driver.find_element(By.ID, "grid")
    return int(grid.get_attribute("data-generation") or 0), grid.get_attribute("data-state") or ""


def settled_after(driver: WebDriver, generation: int) -> None:
    """Wait until a list newer than `generation` has finished loading its page."""
    wait_for(driver, lambda d: grid_state(d)[0] > generation and grid_state(d)[1] != "loading")


def open_page(driver: WebDriver, url: str) -> None:
    driver.get(url)
    settled_after(driver, 0)


def tile_ids(driver: WebDriver, scope: str = "#grid") -> list[int]:
    script = (
        f"return [...document.querySelectorAll('{scope} .tile')].map(t => Number(t.dataset.id))"
    )
    return driver.execute_script(script)


def text_of(driver: WebDriver, element_id: str) -> str:
    return driver.find_element(By.ID, element_id).text


def shown(driver: WebDriver, element_id: str) -> bool:
    return driver.find_element(By.ID, element_id).is_displayed()


def run_search(driver: WebDriver, query: str) -> None:
    before = grid_state(driver)[0]
    box = driver.find_element(By.ID, "query")
    box.clear()
    box.send_keys(query, Keys.ENTER)
    settled_after(driver, before)


def set_date(driver: WebDriver, field_id: str, value: str) -> None:
    # Typing into <input type=date> depends on the browser's locale; set it as a picker would.
    before = grid_state(driver)[0]
    driver.execute_script(
        "const f = document.getElementById(arguments[0]); f.value = arguments[1];"
        "f.dispatchEvent(new Event('change', {bubbles: true}));",
        field_id,
        value,
    )
    settled_after(driver, before)


def scroll_to_the_end(driver: WebDriver) -> None:
    while grid_state(driver)[1] != "done":
        driver.execute_script("window.scrollTo(0, document.body.scrollHeight)")
        count = len(tile_ids(driver))
        wait_for(driver, lambda d, n=count: grid_state(d)[1] == "done" or len(tile_ids(d)) > n)


def back(driver: WebDriver) -> None:
    before = grid_state(driver)[0]
    driver.back()
    settled_after(driver, before)


def visible_thumbnails_loaded(driver: WebDriver) -> bool:
    return driver.execute_script(
        """
        const tiles = [...document.querySelectorAll('#grid .tile')];
        const visible = tiles.filter(t => t.getBoundingClientRect().bottom <= innerHeight &&
                                          t.getBoundingClientRect().top >= 0);
        return visible.length > 0 && visible.every(t => t.classList.contains('loaded') &&
            getComputedStyle(t.querySelector('img')).opacity === '1');
        """
    )


def library_order(library: WebLibrary) -> list[int]:
    """Newest first by the time taken; undated photos last, newest file first."""
    mtimes = {pid: os.stat(path).st_mtime_ns for path, pid in library.ids.items()}
    dated = sorted((t, i) for i, t in library.taken.items() if t is not None)
    undated = sorted((mtimes[i], i) for i, t in library.taken.items() if t is None)
    return [i for _, i in dated[::-1]] + [i for _, i in undated[::-1]]


def months_in_grid(driver: WebDriver) -> list[tuple[str, list[int]]]:
    """(month heading, ids of the tiles under it), in page order."""
    return driver.execute_script(
        """
        const out = [];
        for (const node of document.getElementById('grid').children) {
          if (node.matches('h2.month')) out.push([node.dataset.month, []]);
          else if (node.matches('.tile')) out[out.length - 1][1].push(Number(node.dataset.id));
        }
        return out;
        """
    )


def axe_violations(driver: WebDriver) -> list[str]:
    """axe-core's WCAG 2 A/AA findings on the page as it is now: '<rule>: <target>'."""
    try:
        script = importlib.resources.files("axe_core_python").joinpath("axe.min.js").read_text()
    except ModuleNotFoundError:
        pytest.fail("axe-core-python (the test extra) is not installed")
    driver.execute_script(script)
    return driver.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        axe.run(document, {runOnly: ['wcag2a', 'wcag2aa', 'best-practice']}).then(r => done(
          r.violations.flatMap(v => v.nodes.map(n => `${v.id}: ${n.target.join(' ')}`))));
        """
    )


# ------------------------------------------------------------------ the library


def test_the_start_page_is_the_library(
    page: WebDriver, web_library: WebLibrary, shots: Path
) -> None:
    order = library_order(web_library)
    scroll_to_the_end(page)
    assert tile_ids(page) == order
    # Month headings, newest first, each over exactly its photos; undated photos last.
    months = months_in_grid(page)
    expected: list[tuple[str, list[int]]] = []
    for photo_id in order:
        taken = web_library.taken[photo_id]
        month = taken.strftime("%Y-%m") if taken else "undated"
        if not expected or expected[-1][0] != month:
            expected.append((month, []))
        expected[-1][1].append(photo_id)
    assert months == [[m, ids] for m, ids in expected]
    headings = page.find_elements(By.CSS_SELECTOR, "#grid h2.month")
    assert headings[-1].text.startswith("No date")
    assert text_of(page, "summary").startswith(f"{len(order)} photos · indexed ")
    # On this day: the photos taken on today's date in other years, newest first.
    today = datetime.date.today()
    same_day = [
        i
        for i in order
        if (t := web_library.taken[i]) and (t.month, t.day) == (today.month, min(today.day, 28))
    ]
    if today.day <= 28:
        assert shown(page, "memories")
        assert tile_ids(page, "#memories-strip") == same_day
        labels = [e.text for e in page.find_elements(By.CSS_SELECTOR, "#memories-strip .date")]
        assert all(label.endswith("years ago") for label in labels), labels
    page.execute_script("window.scrollTo(0, 0)")
    wait_for(page, visible_thumbnails_loaded)
    screenshot(page, shots / "photos-library.png")


def test_scrolling_and_jumping_through_the_library(
    page: WebDriver, web_library: WebLibrary
) -> None:
    order = library_order(web_library)
    assert len(order) > LIBRARY_PAGE  # the premise: the library takes two pages
    scroll_to_the_end(page)
    assert tile_ids(page) == order
    # Jump to a month: the list starts there, the URL says so, and a reload keeps it.
    target = sorted({t.strftime("%Y-%m") for t in web_library.taken.values() if t})[3]
    before = grid_state(page)[0]
    Select(page.find_element(By.ID, "jump")).select_by_value(target)
    settled_after(page, before)
    assert f"at={target}" in page.current_url
    assert months_in_grid(page)[0][0] == target
    start = next(
        n
        for n, i in enumerate(order)
        if (t := web_library.taken[i]) and t.strftime("%Y-%m") <= target
    )
    assert tile_ids(page) == order[start : start + len(tile_ids(page))]
    open_page(page, page.current_url)
    assert months_in_grid(page)[0][0] == target
    before = grid_state(page)[0]
    page.find_element(By.ID, "to-newest").click()
    settled_after(page, before)
    assert tile_ids(page)[0] == order[0] and "at=" not in page.current_url


def test_the_folder_picker_narrows_the_library(page: WebDriver, web_library: WebLibrary) -> None:
    recent = str(web_library.root / "recent")
    picker = Select(page.find_element(By.ID, "folder"))
    labels = {o.get_attribute("value"): o.text for o in picker.options}
    assert (
        labels[recent].strip()
        == f"recent ({sum(1 for p in web_library.ids if p.startswith(recent + '/'))})"
    )
    before = grid_state(page)[0]
    picker.select_by_value(recent)
    settled_after(page, before)
    scroll_to_the_end(page)
    expected = [
        i
        for i in library_order(web_library)
        if i in {web_library.ids[p] for p in web_library.ids if p.startswith(recent + "/")}
    ]
    assert tile_ids(page) == expected
    summary = f"{len(expected)} photos match the filters"
    try:
        wait_for(page, lambda d: text_of(d, "summary") == summary)
    except TimeoutException:
        raise AssertionError(f"{text_of(page, 'summary')!r}, not {summary!r}") from None
    open_page(page, page.current_url)  # the folder is in the URL
    assert (
        Select(page.find_element(By.ID, "folder")).first_selected_option.get_attribute("value")
        == recent
    )
    scroll_to_the_end(page)
    assert tile_ids(page) == expected


class TimelineHeldStore:
    """The real store, whose totals for a folder wait at a gate the test opens; it notes
    each page of that folder asked for while they wait."""

    def __init__(self, store: object, folder: str) -> None:
        self._store = store
        self.folder = folder
        self.gate = threading.Event()
        self.asked = threading.Event()
        self.pages_while_held = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)

    def timeline(self, flt: object) -> object:
        if getattr(flt, "folder", None) == self.folder:
            self.asked.set()
            self.gate.wait(timeout=60)
        return self._store.timeline(flt)  # type: ignore[attr-defined]

    def browse(self, flt: object, *args: object) -> object:
        if getattr(flt, "folder", None) == self.folder and not self.gate.is_set():
            self.pages_while_held += 1
        return self._store.browse(flt, *args)  # type: ignore[attr-defined]


def test_a_library_list_waits_for_its_totals(
    browser: WebDriver, web_library: WebLibrary, tmp_path: Path
) -> None:
    """Pages shown before the totals came back left the summary empty (seen in CI): the
    page's scroll watcher loaded them while /api/timeline was still on its way."""
    recent = str(web_library.root / "recent")
    store = open_store(str(web_library.db), read_only=True)
    held = TimelineHeldStore(store, recent)
    try:
        app = create_app(held, web_library.searcher(store), thumbnail_cache=tmp_path / "t")  # type: ignore[arg-type]
        with running(app) as url:
            open_page(browser, url)
            before = grid_state(browser)[0]
            Select(browser.find_element(By.ID, "folder")).select_by_value(recent)
            assert held.asked.wait(timeout=60), "the page never asked for the folder's totals"
            # Two animation frames: the scroll watcher has had its turn to ask for a page.
            browser.execute_async_script(
                "requestAnimationFrame(() => requestAnimationFrame(arguments[0]))"
            )
            assert held.pages_while_held == 0 and tile_ids(browser) == []
            held.gate.set()
            settled_after(browser, before)
            scroll_to_the_end(browser)
            count = sum(1 for p in web_library.ids if p.startswith(recent + "/"))
            assert text_of(browser, "summary") == f"{count} photos match the filters"
            headings = browser.find_elements(By.CSS_SELECTOR, "#grid h2.month")
            assert headings and all(h.find_elements(By.CLASS_NAME, "count") for h in headings)
    finally:
        held.gate.set()
        store.close()


# ------------------------------------------------------------------ search


def test_search_tiles_show_name_date_and_relevance(
    page: WebDriver, web_library: WebLibrary, shots: Path
) -> None:
    run_search(page, QUERY)
    scores = web_library.scores(web_library.text_vector(QUERY))
    ids = tile_ids(page)
    assert_ranked(ids, scores, web_library.vectors, SEARCH_PAGE)
    assert text_of(page, "summary") == f"{len(web_library.ids)} photos, best matches first"
    assert "?q=" in page.current_url
    paths = {pid: path for path, pid in web_library.ids.items()}
    tiles = page.find_elements(By.CSS_SELECTOR, "#grid .tile")
    for tile, photo_id in zip(tiles[:5], ids, strict=False):
        assert tile.find_element(By.CSS_SELECTOR, ".name").text == Path(paths[photo_id]).name
        date = tile.find_element(By.CSS_SELECTOR, ".date").text
        taken = web_library.taken[photo_id]
        assert (str(taken.year) in date) if taken else date == "No date"
        assert not re.search(r"\d\.\d{2}", tile.text)  # no raw cosine anywhere on a tile
    widths = page.execute_script(
        "return [...document.querySelectorAll('#grid .tile .relevance')]"
        ".map(b => b.getBoundingClientRect().width)"
    )
    assert len(widths) == len(ids) and widths == sorted(widths, reverse=True)
    wait_for(page, visible_thumbnails_loaded)
    screenshot(page, shots / "photos-search.png")


def test_scrolling_down_loads_the_rest(page: WebDriver, web_library: WebLibrary) -> None:
    run_search(page, QUERY)
    assert len(tile_ids(page)) == SEARCH_PAGE and grid_state(page)[1] == "more"
    # The premise: the end of the first page is below the window, so only scrolling loads more.
    assert page.execute_script(
        "return document.getElementById('sentinel').getBoundingClientRect().top > innerHeight + 600"
    )
    scroll_to_the_end(page)
    scores = web_library.scores(web_library.text_vector(QUERY))
    assert_ranked(tile_ids(page), scores, web_library.vectors, len(web_library.vectors))


def test_query_and_filters_live_in_the_url(page: WebDriver, web_library: WebLibrary) -> None:
    scores = web_library.scores(web_library.text_vector(QUERY))
    taken = web_library.taken
    run_search(page, QUERY)
    set_date(page, "not-before", "2016-01-01")
    set_date(page, "not-after", "2019-12-31")
    assert "from=2016-01-01" in page.current_url and "to=2019-12-31" in page.current_url
    first, last = datetime.date(2016, 1, 1), datetime.date(2019, 12, 31)
    in_range = {i for i, t in taken.items() if t and first <= t.date() <= last}
    scroll_to_the_end(page)
    assert_ranked(tile_ids(page), scores, in_range, len(in_range))
    # A reload (or a shared link) shows the same.
    open_page(page, page.current_url)
    assert page.find_element(By.ID, "query").get_attribute("value") == QUERY
    assert page.find_element(By.ID, "not-after").get_attribute("value") == "2019-12-31"
    scroll_to_the_end(page)
    assert_ranked(tile_ids(page), scores, in_range, len(in_range))
    # Back undoes one step at a time: the second date, the first, then the search.
    back(page)
    assert page.find_element(By.ID, "not-after").get_attribute("value") == ""
    assert "from=2016-01-01" in page.current_url and "to=" not in page.current_url
    back(page)
    assert (
        "from=" not in page.current_url
        and page.find_element(By.ID, "query").get_attribute("value") == QUERY
    )
    assert_ranked(tile_ids(page), scores, web_library.vectors, SEARCH_PAGE)
    back(page)
    assert (
        "q=" not in page.current_url
        and page.find_element(By.ID, "query").get_attribute("value") == ""
    )
    assert tile_ids(page)[:5] == library_order(web_library)[:5]
    before = grid_state(page)[0]
    page.forward()
    settled_after(page, before)
    assert page.find_element(By.ID, "query").get_attribute("value") == QUERY


def test_date_filters_say_how_many_undated_photos_they_hide(
    page: WebDriver, web_library: WebLibrary
) -> None:
    undated = sum(1 for t in web_library.taken.values() if t is None)
    assert undated > 0
    run_search(page, QUERY)
    assert not shown(page, "hint")
    set_date(page, "not-before", "2010-01-01")
    # The hint comes with the filtered results: wait for it, not for the click.
    wait_for(page, lambda d: shown(d, "hint"))
    assert text_of(page, "hint").startswith(f"{undated} photos without a date are not shown")
    # The same in the library.
    page.find_element(By.ID, "nav-library").click()
    wait_for(page, lambda d: "q=" not in d.current_url and grid_state(d)[1] != "loading")
    wait_for(
        page, lambda d: shown(d, "hint") and text_of(d, "hint").startswith(f"{undated} photos")
    )


def test_filters_narrow_the_results(page: WebDriver, web_library: WebLibrary) -> None:
    run_search(page, QUERY)
    scores = web_library.scores(web_library.text_vector(QUERY))
    before = grid_state(page)[0]
    page.find_element(By.ID, "on-this-day").click()
    settled_after(page, before)
    today = datetime.date.today()
    same_day = {
        i
        for i, t in web_library.taken.items()
        if t and (t.month, t.day) == (today.month, today.day)
    }
    assert_ranked(tile_ids(page), scores, same_day, len(same_day))
    before = grid_state(page)[0]
    page.find_element(By.ID, "clear-filters").click()
    settled_after(page, before)
    assert len(tile_ids(page)) == SEARCH_PAGE and "day=" not in page.current_url
    ordered = sorted(scores.values())
    threshold = round((ordered[30] + ordered[31]) / 2, 4)
    before = grid_state(page)[0]
    page.find_element(By.ID, "min-score").send_keys(str(threshold), Keys.TAB)
    settled_after(page, before)
    scroll_to_the_end(page)
    above = {i for i, s in scores.items() if s >= threshold}
    assert_ranked(tile_ids(page), scores, above, len(above))
    assert text_of(page, "summary") == f"{len(above)} photos, best matches first"


def test_similar_shows_the_reference_and_clears_the_query(
    page: WebDriver, web_library: WebLibrary
) -> None:
    run_search(page, QUERY)
    tile = page.find_elements(By.CSS_SELECTOR, "#grid .tile")[2]
    chosen = int(tile.get_attribute("data-id"))
    name = tile.find_element(By.CSS_SELECTOR, ".name").text
    before = grid_state(page)[0]
    tile.find_element(By.CSS_SELECTOR, "button.similar").click()
    settled_after(page, before)
    assert shown(page, "similar-banner") and text_of(page, "similar-name") == name
    wait_for(
        page,
        lambda d: (
            d.execute_script("return document.getElementById('similar-thumb').naturalWidth") > 0
        ),
    )
    assert page.find_element(By.ID, "query").get_attribute("value") == ""
    assert f"similar={chosen}" in page.current_url and "q=" not in page.current_url
    scores = web_library.scores(web_library.vectors[chosen])
    others = set(web_library.vectors) - {chosen}
    assert_ranked(tile_ids(page), scores, others, SEARCH_PAGE)
    assert text_of(page, "summary") == f"{len(others)} photos, best matches first"
    # Back returns to the text search.
    before = grid_state(page)[0]
    page.find_element(By.ID, "similar-close").click()
    settled_after(page, before)
    assert not shown(page, "similar-banner")
    assert page.find_element(By.ID, "query").get_attribute("value") == QUERY


def test_a_bad_query_shows_the_servers_reason(page: WebDriver) -> None:
    run_search(page, "tulips +")
    assert shown(page, "error") and "ends with an operator" in text_of(page, "error")
    assert tile_ids(page) == []
    # The browser logs the refused request itself; nothing else may have gone wrong.
    logged = console_errors(page)
    assert len(logged) == 1 and "400 (Bad Request)" in logged[0], logged


def test_slash_focuses_the_search_box(page: WebDriver) -> None:
    page.find_element(By.TAG_NAME, "body").send_keys("/")
    assert page.switch_to.active_element.get_attribute("id") == "query"
    assert page.find_element(By.ID, "query").get_attribute("value") == ""


# ------------------------------------------------------------------ the viewer


def test_viewer_position_details_and_history(
    page: WebDriver, web_library: WebLibrary, tmp_path: Path, shots: Path
) -> None:
    run_search(page, QUERY)
    ids = tile_ids(page)
    paths = {photo_id: path for path, photo_id in web_library.ids.items()}
    page.find_elements(By.CSS_SELECTOR, "#grid .tile .thumb")[2].click()
    viewer = page.find_element(By.ID, "viewer")
    image = page.find_element(By.ID, "viewer-image")
    wait_for(page, lambda d: viewer.get_attribute("data-state") == "shown")
    assert text_of(page, "viewer-position") == f"3 of {len(web_library.ids)}"
    assert text_of(page, "viewer-title") == Path(paths[ids[2]]).name
    assert f"photo={ids[2]}" in page.current_url
    details = text_of(page, "viewer-meta")
    assert "96 \u00d7 72 px" in details  # a multiplication sign
    # The path wraps only after its separators: no piece of it spans two lines.
    path_text = page.find_element(By.CSS_SELECTOR, "#viewer-meta .path").text
    assert path_text.replace("\n", "") == paths[ids[2]]
    assert page.execute_script(
        """
        const nodes = [...document.querySelector('#viewer-meta .path').childNodes]
          .filter(n => n.nodeType === Node.TEXT_NODE);
        return nodes.every(n => { const r = document.createRange(); r.selectNodeContents(n);
                                  return r.getClientRects().length === 1; });
        """
    )
    pixels = screenshot(page, shots / "photos-viewer.png")
    box = image.rect
    x, y, w, h = (round(box[k]) for k in ("x", "y", "width", "height"))
    shown_colour = pixels[y + h // 3 : y + 2 * h // 3, x + w // 3 : x + 2 * w // 3].reshape(-1, 3)
    assert np.abs(shown_colour.mean(0) - web_library.colours[ids[2]]).max() < 12
    # Arrow keys move through the list (the URL follows); Back closes the viewer.
    viewer.send_keys(Keys.ARROW_RIGHT)
    wait_for(page, lambda d: viewer.get_attribute("data-id") == str(ids[3]))
    assert text_of(page, "viewer-position") == f"4 of {len(web_library.ids)}"
    wait_for(page, lambda d: f"photo={ids[3]}" in d.current_url)
    page.back()
    wait_for(page, lambda d: viewer.get_attribute("open") is None)
    assert "photo=" not in page.current_url and len(tile_ids(page)) == SEARCH_PAGE
    # A link to a photo opens the viewer on it; Escape closes it and the URL forgets it.
    open_page(page, f"{page.current_url}&photo={ids[5]}")
    viewer = page.find_element(By.ID, "viewer")
    wait_for(page, lambda d: viewer.get_attribute("data-state") == "shown")
    assert viewer.get_attribute("data-id") == str(ids[5])
    viewer.send_keys(Keys.ESCAPE)
    wait_for(page, lambda d: viewer.get_attribute("open") is None and "photo=" not in d.current_url)


def test_screenshot_shows_each_tile_with_its_own_photo(
    page: WebDriver, web_library: WebLibrary, tmp_path: Path
) -> None:
    run_search(page, QUERY)
    wait_for(page, visible_thumbnails_loaded)
    pixels = screenshot(page, tmp_path / "grid.png")
    ids = list(web_library.colours)
    palette = np.stack([web_library.colours[i] for i in ids])
    checked = 0
    for tile in page.find_elements(By.CSS_SELECTOR, "#grid .tile"):
        thumb = tile.find_element(By.CSS_SELECTOR, ".thumb").rect
        x, y, w, h = (round(thumb[k]) for k in ("x", "y", "width", "height"))
        if y < 0 or y + h > pixels.shape[0]:
            continue  # out of the window
        centre = pixels[y + h // 4 : y + 3 * h // 4, x + w // 4 : x + 3 * w // 4]
        distances = np.linalg.norm(palette - centre.reshape(-1, 3).mean(axis=0), axis=1)
        assert ids[int(distances.argmin())] == int(tile.get_attribute("data-id"))
        assert distances.min() < 12
        checked += 1
    assert checked >= 6, f"only {checked} tiles were fully on screen"


def _camera_exif(taken: datetime.datetime) -> Image.Exif:
    exif = exif_block(taken=taken, gps=(48.8584, 2.2945), make="Canon")
    exif[ExifTags.Base.Model] = "Canon EOS 5D Mark IV"
    sub = exif.get_ifd(ExifTags.IFD.Exif)
    sub[ExifTags.Base.LensModel] = "EF24-70mm f/2.8L II USM"
    sub[ExifTags.Base.ExposureTime] = IFDRational(1, 250)
    sub[ExifTags.Base.FNumber] = IFDRational(28, 10)
    sub[ExifTags.Base.ISOSpeedRatings] = 200
    sub[ExifTags.Base.FocalLength] = IFDRational(50, 1)
    return exif


@pytest.fixture(scope="module")
def details_server(
    tmp_path_factory: pytest.TempPathFactory, photo_models: PhotoModels, image_model: Model
) -> Iterator[tuple[str, dict[str, int]]]:
    """Four photos: a large one with a camera's EXIF, and three whose files are then deleted,
    changed, or left alone."""
    base = tmp_path_factory.mktemp("details")
    root = base / "photos"
    root.mkdir()
    taken = datetime.datetime(2022, 5, 1, 9, 30)
    Image.fromarray(photo_array(1200, 1600, seed=3)).save(
        root / "camera.jpg", quality=90, exif=_camera_exif(taken).tobytes()
    )
    for n, name in enumerate(["gone.jpg", "edited.jpg", "plain.jpg"]):
        moment = taken - datetime.timedelta(days=n + 1)
        Image.fromarray(photo_array(60, 80, seed=n)).save(
            root / name, exif=exif_block(taken=moment).tobytes()
        )
    db = base / "index.db"
    store = open_store(str(db))
    Indexer(store, index_options(photo_models), model=image_model).run([str(root)])
    ids = {p.name: store.get_by_path(str(p)).id for p in root.iterdir()}  # type: ignore[union-attr]
    store.close()
    (root / "gone.jpg").unlink()
    (root / "edited.jpg").write_bytes((root / "edited.jpg").read_bytes() + b"\0")
    store = open_store(str(db), read_only=True)
    from handspring.photos.search.searcher import QueryModels

    models = QueryModels(str(photo_models.image), str(photo_models.text), precision="fp32")
    app = create_app(store, Searcher(store, models), thumbnail_cache=base / "thumbs")
    try:
        with running(app) as url:
            yield url, ids
    finally:
        store.close()


def test_viewer_details_zoom_and_files_gone_or_changed(
    browser: WebDriver, details_server: tuple[str, dict[str, int]]
) -> None:
    url, ids = details_server
    open_page(browser, url)
    wait_for(
        browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#grid .tile.unavailable")) == 2
    )
    for name, label in [("gone.jpg", "File missing"), ("edited.jpg", "Changed on disk")]:
        tile = browser.find_element(By.CSS_SELECTOR, f"#grid .tile[data-id='{ids[name]}']")
        assert tile.find_element(By.CSS_SELECTOR, ".file-state").text == label
        assert not tile.find_element(By.CSS_SELECTOR, "button.similar").is_enabled()
    viewer = browser.find_element(By.ID, "viewer")
    # The camera's photo: its details, and a zoom to its full resolution.
    browser.find_element(
        By.CSS_SELECTOR, f"#grid .tile[data-id='{ids['camera.jpg']}'] .thumb"
    ).click()
    wait_for(browser, lambda d: viewer.get_attribute("data-state") == "shown")
    details = text_of(browser, "viewer-meta")
    for fact in [
        "Canon EOS 5D Mark IV",
        "EF24-70mm f/2.8L II USM",
        "1/250 s · f/2.8 · ISO 200 · 50 mm",
        "48.85840, 2.29450",
        "1600 \u00d7 1200 px",
    ]:
        assert fact in details
    assert text_of(browser, "viewer-position") == "1 of 4"
    figure = browser.find_element(By.ID, "viewer-figure")
    assert browser.execute_script(
        "return arguments[0].scrollWidth <= arguments[0].clientWidth", figure
    )
    browser.find_element(By.ID, "viewer-zoom").click()
    wait_for(browser, lambda d: "zoomed" in (figure.get_attribute("class") or ""))
    image = browser.find_element(By.ID, "viewer-image")
    assert (
        browser.execute_script("return arguments[0].getBoundingClientRect().width", image) == 1600
    )
    assert browser.execute_script(
        "return arguments[0].scrollWidth > arguments[0].clientWidth", figure
    )
    browser.find_element(By.ID, "viewer-zoom").click()
    wait_for(browser, lambda d: "zoomed" not in (figure.get_attribute("class") or ""))
    # Files gone or changed: a message, and nothing that needs the file.
    for name, state, words in [
        ("gone.jpg", "missing", "no longer on disk"),
        ("edited.jpg", "changed", "changed after it was indexed"),
    ]:
        viewer.send_keys(Keys.ARROW_RIGHT)
        wait_for(browser, lambda d, s=state: viewer.get_attribute("data-state") == s)
        assert viewer.get_attribute("data-id") == str(ids[name])
        assert words in text_of(browser, "viewer-message")
        for button in ("viewer-similar", "viewer-download", "viewer-zoom"):
            assert not browser.find_element(By.ID, button).is_enabled()
    viewer.send_keys(Keys.ESCAPE)
    wait_for(browser, lambda d: viewer.get_attribute("open") is None)


# ------------------------------------------------------------------ loading and errors


class GatedSearcher(Searcher):
    """The real searcher, held at a gate the test opens: the page's loading state can then
    be seen for certain, not caught by luck."""

    gate = threading.Event()

    def search(self, *args: object, **kwargs: object) -> object:  # type: ignore[override]
        self.gate.wait(timeout=60)
        return super().search(*args, **kwargs)  # type: ignore[arg-type]


def test_skeletons_and_the_model_loading_message(
    browser: WebDriver, web_library: WebLibrary, tmp_path: Path
) -> None:
    store = open_store(str(web_library.db), read_only=True)
    from handspring.photos.search.searcher import QueryModels

    models = QueryModels(str(web_library.models.image), str(web_library.models.text), "fp32")
    searcher = GatedSearcher(store, models)
    GatedSearcher.gate.clear()
    try:
        app = create_app(store, searcher, thumbnail_cache=tmp_path / "thumbs")
        with running(app) as url:
            open_page(browser, url)
            assert not shown(browser, "loading-model")
            browser.find_element(By.ID, "query").send_keys(QUERY, Keys.ENTER)
            wait_for(browser, lambda d: shown(d, "loading-model"))
            assert "Loading the model (first search only)" in text_of(browser, "loading-model")
            assert len(browser.find_elements(By.CSS_SELECTOR, "#grid .skeleton")) == 12
            assert grid_state(browser)[1] == "loading"
            GatedSearcher.gate.set()
            wait_for(browser, lambda d: grid_state(d)[1] == "more")
            assert not shown(browser, "loading-model")
            assert browser.find_elements(By.CSS_SELECTOR, "#grid .skeleton") == []
            assert len(tile_ids(browser)) == SEARCH_PAGE
            # Loaded once: the next search shows no such message.
            run_search(browser, "a boat")
            assert not shown(browser, "loading-model")
    finally:
        GatedSearcher.gate.set()
        store.close()


@contextlib.contextmanager
def serving_on(app: object, port: int) -> Iterator[None]:
    """`app` on this loopback port (so a page can reach it again after a restart)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, lifespan="on"))  # type: ignore[arg-type]
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def test_a_stopped_server_gets_a_friendly_message_and_a_retry(
    browser: WebDriver, web_library: WebLibrary, tmp_path: Path
) -> None:
    store = open_store(str(web_library.db), read_only=True)
    try:
        app = create_app(store, web_library.searcher(store), thumbnail_cache=tmp_path / "t")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        url = f"http://127.0.0.1:{port}/"
        with serving_on(app, port):
            open_page(browser, url)
        assert not shown(browser, "offline")
        browser.find_element(By.ID, "query").send_keys(QUERY, Keys.ENTER)
        wait_for(browser, lambda d: shown(d, "offline"))
        assert "Can't reach the photo server" in text_of(browser, "offline")
        assert "Failed to fetch" not in browser.find_element(By.TAG_NAME, "body").text
        with serving_on(app, port):
            browser.find_element(By.ID, "retry").click()
            wait_for(browser, lambda d: not shown(d, "offline") and len(tile_ids(d)) == SEARCH_PAGE)
    finally:
        store.close()


@pytest.fixture(scope="module")
def secured_server(
    web_library: WebLibrary, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    auth = AuthConfig(api_keys=("ui-key-0123456789",))
    with serve_library(web_library, tmp_path_factory.mktemp("thumbs"), auth=auth) as url:
        yield url


def test_sign_in_is_asked_when_the_page_opens(browser: WebDriver, secured_server: str) -> None:
    browser.get(secured_server)
    browser.execute_script("sessionStorage.clear()")
    browser.refresh()
    dialog = browser.find_element(By.ID, "auth")
    wait_for(browser, lambda d: dialog.get_attribute("open") is not None)  # no search needed
    browser.find_element(By.ID, "auth-key").send_keys("wrong-key", Keys.ENTER)
    reason = browser.find_element(By.ID, "auth-reason")
    wait_for(browser, lambda d: "invalid API key" in reason.text)
    browser.find_element(By.ID, "auth-key").send_keys("ui-key-0123456789", Keys.ENTER)
    wait_for(browser, lambda d: len(tile_ids(d)) == LIBRARY_PAGE)
    wait_for(browser, visible_thumbnails_loaded)  # thumbnails are fetched with the key too
    # Kept for this tab: a reload does not ask again.
    open_page(browser, secured_server)
    assert browser.find_element(By.ID, "auth").get_attribute("open") is None
    assert browser.execute_script("return sessionStorage.length") == 1


# ------------------------------------------------------------------ duplicates


def test_the_duplicates_page_lists_groups(
    page: WebDriver, web_library: WebLibrary, server: str, shots: Path
) -> None:
    ids = sorted(web_library.vectors)
    vectors = np.stack([web_library.vectors[i] for i in ids])
    scores = vectors @ vectors.T
    pairs = sorted(
        (
            (float(scores[a, b]), ids[a], ids[b])
            for a in range(len(ids))
            for b in range(a + 1, len(ids))
        ),
        reverse=True,
    )
    # A threshold in a clear gap below the closest few pairs.
    cut = next(n for n in range(4, 40) if pairs[n - 1][0] - pairs[n][0] > 2e-4)
    threshold = round((pairs[cut - 1][0] + pairs[cut][0]) / 2, 6)
    parent = {i: i for i in ids}

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for _, a, b in pairs[:cut]:
        parent[root(a)] = root(b)
    groups: dict[int, set[int]] = {}
    for _, a, b in pairs[:cut]:
        groups.setdefault(root(a), set()).update({a, b})
    open_page(page, f"{server}/?view=duplicates&threshold={threshold}")
    section = page.find_element(By.ID, "duplicates")
    wait_for(page, lambda d: section.get_attribute("data-state") == "done")
    shown_groups = page.execute_script(
        "return [...document.querySelectorAll('.duplicate-group')]"
        ".map(g => [...g.querySelectorAll('.tile')].map(t => Number(t.dataset.id)))"
    )
    assert sorted(sorted(g) for g in shown_groups) == sorted(sorted(g) for g in groups.values())
    card = page.find_element(By.CSS_SELECTOR, ".duplicate-group .tile")
    for label in ("Size", "Pixels", "Taken", "Path"):
        assert label in card.text
    assert "Nothing is deleted" in page.find_element(By.ID, "duplicates").text
    wait_for(
        page,
        lambda d: all(
            "loaded" in t.get_attribute("class")
            for t in d.find_elements(By.CSS_SELECTOR, ".duplicate-group .tile")
        ),
    )
    screenshot(page, shots / "photos-duplicates.png")


# ------------------------------------------------------------------ accessibility


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_accessibility_in_light_and_dark(
    page: WebDriver, server: str, web_library: WebLibrary, scheme: str
) -> None:
    page.execute_cdp_cmd(
        "Emulation.setEmulatedMedia",
        {"features": [{"name": "prefers-color-scheme", "value": scheme}]},
    )
    try:
        open_page(page, server)
        background = page.execute_script("return getComputedStyle(document.body).backgroundColor")
        level = sum(int(c) for c in background[background.index("(") + 1 : -1].split(",")[:3])
        assert (level < 150) == (scheme == "dark"), background
        found = {"library": axe_violations(page)}
        run_search(page, QUERY)
        found["search"] = axe_violations(page)
        page.find_elements(By.CSS_SELECTOR, "#grid .tile .thumb")[0].click()
        viewer = page.find_element(By.ID, "viewer")
        wait_for(page, lambda d: viewer.get_attribute("data-state") == "shown")
        found["viewer"] = axe_violations(page)
        viewer.send_keys(Keys.ESCAPE)
        assert {view: v for view, v in found.items() if v} == {}
    finally:
        page.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
