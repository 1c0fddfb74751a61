"""The app in a real browser: ``hwsearch app`` serves a finished tiny run, Debian's chromium
(driven by Playwright) opens the Pareto explorer, counts the points Plotly drew, clicks one, then a
row of the front table, and reads the candidate panel each time. AppTest cannot see Plotly charts
or click a table; this can."""

import os
import re
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from hwsearch.search.outputs._results import RunResults
from tests.conftest import REPO, free_port, hwsearch_cmd, stop_process

CHROMIUM = Path("/usr/bin/chromium")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium "
                                                     "(apt-get install chromium; .ci/run installs it)"),
]


def serving(proc: subprocess.Popen, port: int) -> str:
    """The app's URL once ``hwsearch app`` (``proc``, on ``port``) answers its health check."""
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.read() == b"ok":
                    return url
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f"hwsearch app did not start:\n{proc.communicate()[0]}")
        time.sleep(0.3)


@pytest.fixture
def served(tiny_run):
    """``hwsearch app`` on the tiny run, on a free local port; stopped afterwards."""
    port = free_port()
    proc = subprocess.Popen([*hwsearch_cmd(), "app", str(tiny_run), "--port", str(port)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = serving(proc, port)
    yield url
    stop_process(proc)


def test_a_click_on_the_chart_or_the_front_table_opens_that_candidate(served, tiny_run, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    res = RunResults(tiny_run)
    # the default axes are latency and accuracy: every trial with both is drawn
    drawn = [r for r in res.rows() if r.latency_ms is not None and r.accuracy is not None]
    front = sorted(res.pareto(), key=lambda r: (-r.accuracy, r.latency_ms))  # the table's order
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM))
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(served)
            page.get_by_text("Pareto explorer", exact=True).click()
            points = page.locator(".st-key-chart .scatterlayer .trace path.point")
            expect(points).to_have_count(len(drawn), timeout=30_000)
            numbers = [points.nth(i).evaluate("e => e.closest('g.trace').__data__[0].trace.customdata[e.__data__.i][0]")
                       for i in range(len(drawn))]
            assert sorted(numbers) == sorted(r.number for r in drawn)  # each trial once, named by customdata

            # a click on a point off the front, alone at its place (two trials can share a place)
            where = [(r.latency_ms, r.accuracy) for r in drawn]
            alone = [r.number for r in drawn if where.count((r.latency_ms, r.accuracy)) == 1
                     and r.number not in {f.number for f in front}]
            assert alone, "the tiny run needs a dominated trial with a place of its own"
            box = points.nth(numbers.index(alone[0])).bounding_box()
            page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            detail = page.locator(".st-key-detail")
            expect(detail.locator("h3").first).to_have_text(f"Trial {alone[0]}", timeout=30_000)
            expect(detail).to_contain_text(res.detail(alone[0]).row.candidate)
            shot = tmp_path / "pareto-explorer.png"
            page.screenshot(path=shot)
            assert shot.stat().st_size > 10_000
            if os.environ.get("HWSEARCH_SCREENSHOTS"):  # where CI keeps it
                Path(os.environ["HWSEARCH_SCREENSHOTS"]).mkdir(parents=True, exist_ok=True)
                page.screenshot(path=Path(os.environ["HWSEARCH_SCREENSHOTS"]) / shot.name)

            # a click on the first row of the front table (the grid is a canvas: its checkbox column,
            # one 35-pixel header row down)
            table = page.locator(".st-key-front_table")
            table.scroll_into_view_if_needed()
            box = table.bounding_box()
            page.mouse.click(box["x"] + 15, box["y"] + 35 + 17)
            expect(detail.locator("h3").first).to_have_text(f"Trial {front[0].number}", timeout=30_000)
        finally:
            browser.close()


@pytest.fixture
def service_app(tmp_path):
    """``hwsearch app`` with no run, its service root in ``tmp_path``; stopped afterwards, with the
    supervisor and the worker its pages started."""
    from hwsearch.search.service import write_config
    from tests.conftest import stop_processes_mentioning

    root, data = tmp_path / "service", tmp_path / "data"
    data.mkdir()
    write_config(root, data_roots=[str(data)])
    port = free_port()
    env = {**os.environ, "HWSEARCH_SERVICE_ROOT": str(root), "HWSEARCH_APP_RUNS": "[]"}
    proc = subprocess.Popen([*hwsearch_cmd(), "app", "--port", str(port)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = serving(proc, port)
    yield url, root
    stop_process(proc)
    stop_processes_mentioning(str(root))


def test_a_search_from_the_new_search_form_to_its_pareto_chart(service_app):
    """The service's pages end to end: the form, a field error fixed, a real job watched, stopped,
    resumed to success, and its run's chart."""
    from playwright.sync_api import expect, sync_playwright

    from hwsearch.search.service import JobStore

    url, root = service_app
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM))
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url)
            page.get_by_text("New search", exact=True).click()

            def field(label: str, value: str) -> None:
                box = page.get_by_label(label, exact=True)
                # While a rerun is in flight (pricing the space on a newly picked target takes
                # seconds), Streamlit keeps the previous run's elements on the page beside the new
                # ones: two boxes of one label. Fill it once the rerun has replaced them.
                expect(box).to_have_count(1, timeout=60_000)
                box.fill(value)
                box.press("Enter")

            field("name", "from-the-browser")
            target = page.locator(".st-key-ns_target")
            # A rerun in flight (pricing the space on the default target takes seconds) swallows the
            # click that opens the menu: pick the target once the app is idle again.
            expect(page.get_by_test_id("stStatusWidget")).to_have_count(0, timeout=120_000)
            option = page.get_by_role("option").filter(has_text="x86-epyc-1t")  # priced without measuring
            for _ in range(10):  # a click that a late rerun swallowed opened no menu (a CI run): click again
                target.click()
                try:
                    expect(option).to_have_count(1, timeout=5_000)
                    break
                except AssertionError:
                    page.keyboard.press("Escape")
            option.click()
            field("limit", "300")
            field("size budget (KB)", "40")
            field("trials", "20")  # about a second each: a window wide enough to stop it while it runs
            field("dense epochs per candidate", "1")
            field("latency budget (ms)", "-1")
            expect(page.get_by_text("budget.latency_ms", exact=False)).to_be_visible(timeout=30_000)
            submit = page.get_by_role("button", name="Submit")
            expect(submit).to_be_disabled()
            field("latency budget (ms)", "0.12")
            expect(page.get_by_text("budget.latency_ms", exact=False)).to_have_count(0, timeout=30_000)
            expect(page.get_by_text("feasible share")).to_be_visible(timeout=60_000)
            expect(submit).to_be_enabled()
            submit.click()
            expect(page.get_by_text("Job 1 submitted")).to_be_visible(timeout=30_000)
            assert JobStore(root).get(1).name == "from-the-browser"

            page.get_by_text("Jobs", exact=True).click()
            job = page.locator("[data-testid='stExpander']").filter(has_text="Job 1: from-the-browser")
            expect(job).to_contain_text("· running ·", timeout=60_000)
            expect(job).to_contain_text(re.compile(r"· running · ([1-9]|1[0-5])/20 trials"), timeout=120_000)  # landing
            job.get_by_role("button", name="Stop").click()
            expect(job).to_contain_text("· stopped ·", timeout=120_000)
            job.get_by_role("button", name="Resume").click()
            expect(job).to_contain_text("· succeeded · 20/20 trials", timeout=240_000)
            job.get_by_role("button", name="Open its run").click()
            expect(page.get_by_role("heading", name="Run from-the-browser")).to_be_visible(timeout=30_000)
            page.get_by_text("Pareto explorer", exact=True).click()
            expect(page.locator(".st-key-chart .scatterlayer .trace path.point").first).to_be_visible(timeout=30_000)
        finally:
            browser.close()
