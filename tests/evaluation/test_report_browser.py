"""report.html in a real headless Chromium (Debian's chromium + chromium-driver, driven by Selenium): no console
errors, the verdict, sorting, the drill-down; a screenshot is kept (TEST_ARTIFACTS, else the test's
temporary folder)."""

import os
import shutil
from pathlib import Path

import pytest
from conftest import require
from test_compare import backends  # noqa: F401  (a fixture)

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium (the dev extra) is not installed")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
DRIVER = shutil.which("chromedriver")

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from rankrelay.evaluation import compare  # noqa: E402


@pytest.fixture
def browser():
    require(CHROMIUM and DRIVER, "no Chromium and chromedriver on this machine (`make browser` installs Debian's "
                                 "chromium and chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1400,1000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=DRIVER), options=options)
    yield driver
    driver.quit()


BOXES = """return Array.from(document.querySelectorAll(arguments[0])).map(function (e) {
  var r = e.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom, e.textContent]; });"""


def assert_inside(driver, outer, inner):
    """No ``inner`` element sticks out of the right edge of the ``outer`` one that holds it (at 1,400 px)."""
    (box,) = driver.execute_script(BOXES, outer)
    for *_, right, _bottom, text in driver.execute_script(BOXES, f"{outer} {inner}"):
        assert right <= box[2] + 1, f"{inner} {text[:40]!r} ends at {right:.0f} px, past {outer}'s {box[2]:.0f} px"


def assert_apart(driver, first, second):
    """No box of ``first`` overlaps a box of ``second`` (None: two boxes of ``first``) by more than a pixel."""
    a = driver.execute_script(BOXES, first)
    b = driver.execute_script(BOXES, second) if second else a
    assert a, f"nothing matches {first}"
    for i, (l1, t1, r1, b1, s1) in enumerate(a):
        for j, (l2, t2, r2, b2, s2) in enumerate(b):
            if second is None and j <= i:
                continue
            overlap = min(r1, r2) - max(l1, l2) > 1 and min(b1, b2) - max(t1, t2) > 1
            assert not overlap, f"{s1!r} overlaps {s2!r}"


def column(driver, table_id, index):
    return [row.find_elements(By.TAG_NAME, "td")[index].text
            for row in driver.find_elements(By.CSS_SELECTOR, f"#{table_id} tbody tr")]


def test_the_page_in_a_real_browser(beir, backends, tmp_path, browser):  # noqa: F811
    out = tmp_path / "report"
    compare(beir, str(tmp_path / "cands.trec"), ["identity", "random", "oracle", "anti"], out=out, progress=False)
    browser.get((out / "report.html").resolve().as_uri())
    WebDriverWait(browser, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#chart-pareto svg"))
    errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    assert not errors, errors
    assert browser.find_element(By.ID, "best").text == "oracle"

    header = browser.find_elements(By.CSS_SELECTOR, "#metrics-table th")[1]  # the first metric column
    header.click()  # descending
    values = [float(v.split()[0]) for v in column(browser, "metrics-table", 1)]
    assert values == sorted(values, reverse=True) and column(browser, "metrics-table", 0)[0] == "oracle"
    header.click()  # ascending
    values = [float(v.split()[0]) for v in column(browser, "metrics-table", 1)]
    assert values == sorted(values) and column(browser, "metrics-table", 0)[-1] == "oracle"

    link = browser.find_element(By.CSS_SELECTOR, "#queries-table a.drill-link")
    qid = link.text
    link.click()
    details = browser.find_element(By.ID, f"q-{qid}")
    WebDriverWait(browser, 5).until(lambda d: details.get_attribute("open") is not None)
    docs = details.find_elements(By.CSS_SELECTOR, "table.doc-list tbody tr")
    # the first stage and the three that rerank (identity is the first stage: shown once)
    assert len(docs) == 4 * 10 and all(d.is_displayed() for d in docs[:10])
    assert [h.text.split()[0] for h in details.find_elements(By.CSS_SELECTOR, "h4")] == [
        "first-stage", "random", "oracle", "anti"]
    assert_inside(browser, "#drilldown", "table")
    assert_inside(browser, "body", "section")
    assert_apart(browser, "#chart-pareto svg .role-legend text", "#chart-pareto svg .role-mark text")
    assert_apart(browser, "#chart-pareto svg .role-axis-label text", None)

    artifacts = Path(os.environ.get("TEST_ARTIFACTS", tmp_path))
    artifacts.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(artifacts / "report.png"))


def test_the_charts_labels_keep_clear_of_the_legend_and_of_each_other(beir, backends, tmp_path, browser):  # noqa: F811
    out = tmp_path / "report"
    named = [{"spec": spec, "name": f"{spec}-configured-with-a-long-descriptive-name"} for spec in ("oracle", "anti")]
    compare(beir, str(tmp_path / "cands.trec"), ["random", *named], out=out, progress=False)
    browser.get((out / "report.html").resolve().as_uri())
    WebDriverWait(browser, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#chart-pareto svg .role-legend"))
    assert_apart(browser, "#chart-pareto svg .role-legend text", "#chart-pareto svg .role-mark text")
    assert_apart(browser, "#chart-pareto svg .role-axis-label text", None)
    assert_inside(browser, "body", "section")
