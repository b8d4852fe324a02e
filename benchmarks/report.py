"""report.html at full size: a 225-query, 5-backend comparison (Cranfield, BM25 candidates at depth 100), its
size, and how long headless Chromium takes to open it (load event, and until every chart is drawn).

The backends are the references (identity and four seeded random orders) so the run takes seconds; the page
holds the same sections and drill-down whatever the backends are.

    python benchmarks/report.py --dataset ../shared/data/cranfield
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from rankrelay.evaluation import compare

TARGETS = {"size_mb": 5.0, "open_s": 2.0}


def open_times(path: Path, repeats: int) -> list[tuple[float, float]]:
    """(load event, all charts drawn) in seconds, per fresh page load in headless Chromium."""
    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=shutil.which("chromedriver")),
                              options=options)
    times = []
    try:
        for _ in range(repeats):
            driver.get("about:blank")
            start = time.perf_counter()
            driver.get(path.resolve().as_uri())  # returns at the load event
            loaded = time.perf_counter() - start
            charts = len(driver.find_elements(By.CSS_SELECTOR, "[id^=chart-]"))
            WebDriverWait(driver, 30).until(
                lambda d: len(d.find_elements(By.CSS_SELECTOR, "[id^=chart-] svg")) == charts)
            times.append((loaded, time.perf_counter() - start))
    finally:
        driver.quit()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="BEIR folder (Cranfield has the 225 queries)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    out = Path(tempfile.mkdtemp(prefix="rankrelay-report-"))
    backends = ["identity", "random:1", "random:2", "random:3", "random:4"]
    start = time.perf_counter()
    comparison = compare(args.dataset, "bm25", backends, depth=100, out=out, progress=False)
    built = time.perf_counter() - start
    html = out / "report.html"
    size_mb = html.stat().st_size / 2**20
    times = open_times(html, args.repeats)
    load = statistics.median(t for t, _ in times)
    drawn = statistics.median(t for _, t in times)
    table = Table(title=f"report.html: {len(comparison.queries)} queries x {len(backends)} backends "
                        f"(+ first stage), depth 100")
    for col in ("size MB", "load event s (median)", "charts drawn s (median)", "bench + reports s"):
        table.add_column(col, justify="right")
    table.add_row(f"{size_mb:.2f}", f"{load:.2f}", f"{drawn:.2f}", f"{built:.1f}")
    console = Console(width=140)
    console.print(table)
    console.print(f"size <= {TARGETS['size_mb']} MB: {'ok' if size_mb <= TARGETS['size_mb'] else 'MISSED'}; "
                  f"open (charts drawn) <= {TARGETS['open_s']} s: {'ok' if drawn <= TARGETS['open_s'] else 'MISSED'}"
                  f"; {html}")


if __name__ == "__main__":
    main()
