"""report.html in a real headless Chromium (Debian's chromium + chromium-driver, driven by Selenium): no console
errors, the verdict, sorting, the drill-down; a screenshot is kept (TEST_ARTIFACTS, else the test's
temporary folder)."""

import os
import shutil
from pathlib import Path

import pytest
from conftest import require
from test_compare import backends, beir  # noqa: F401  (fixtures)

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
    assert len(docs) == 5 * 10 and all(d.is_displayed() for d in docs[:10])
    assert details.find_element(By.CSS_SELECTOR, "h4").text.startswith("first-stage")

    artifacts = Path(os.environ.get("TEST_ARTIFACTS", tmp_path))
    artifacts.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(artifacts / "report.png"))
