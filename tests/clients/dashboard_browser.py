"""The dashboard in a real browser: the system's Chromium, headless, driven by Selenium.

Run by the tests, which start the engine or cluster, its dashboard and the queries, and pass
what they know:

    python3 dashboard_browser.py local URL RUNNING_ID FINISHED_ID OPERATORS SCREENSHOTS_DIR

(tests/dashboard.rs) The running query appears on the Queries page with a progress bar that
moves; its Cancel button stops it and the page shows it cancelled; the finished query's page
draws its plan with one box per operator; the Datasets and Workers pages list what the engine
has.

    python3 dashboard_browser.py cluster URL JOB_ID STAGES EXECUTOR_PID SCREENSHOTS_DIR

(tests/cluster.rs, on the dashboard a scheduler serves) The Jobs page lists the finished job;
its page shows its STAGES stages and a task stream with one lane per executor that ran its
tasks; the Workers page lists the executors alive; once the process EXECUTOR_PID is killed,
the Workers page marks one executor dead.

Prints one line per scenario passed; exits non-zero with the reason on the first failure.
A screenshot of each page is saved in SCREENSHOTS_DIR.
"""

import os
import pathlib
import shutil
import signal
import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait


def browser():
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--disable-gpu", "--window-size=1400,1000"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    driver = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    return webdriver.Chrome(service=Service(driver), options=options)


def fresh(d, selector, act, tries=50):
    """Acts on the element matching selector, looked up again if a refresh replaced it."""
    for _ in range(tries):
        try:
            return act(d.find_element(By.CSS_SELECTOR, selector))
        except StaleElementReferenceException:
            time.sleep(0.05)
    sys.exit(f"{selector} was replaced {tries} times in a row")


def local(d, wait, shots, url, running, finished, operators):
    # The Queries page: the running query with a progress bar that moves.
    d.get(url + "/")
    row = f'tr[data-query="{running}"]'
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, f'{row}[data-state="running"]'))

    def share():
        # The rows are drawn again at every refresh, so the two widths are read in one
        # script, from the elements on the page at that moment.
        return d.execute_script(
            """const bar = document.querySelector(arguments[0] + ' .progress .bar');
               const whole = document.querySelector(arguments[0] + ' .progress');
               if (!bar || !whole) return 0;
               return bar.getBoundingClientRect().width / whole.getBoundingClientRect().width;""",
            row,
        )

    first = share()
    wait.until(lambda d: share() > first + 0.001)
    second = share()
    print(f"progress bar moved: {first:.3f} -> {second:.3f}", flush=True)
    d.save_screenshot(str(shots / "queries-running.png"))

    # Cancel stops it; the row shows it cancelled.
    fresh(d, f"{row} button.cancel", lambda button: button.click())
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, f'{row}[data-state="cancelled"]'))
    print("cancel: the query shows cancelled", flush=True)
    d.save_screenshot(str(shots / "queries-cancelled.png"))

    # The finished query's page draws its plan, one box per operator.
    d.get(f"{url}/queries/{finished}")
    boxes = "#plan svg g.operator"
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, boxes))
    drawn = len(d.find_elements(By.CSS_SELECTOR, boxes))
    if drawn != int(operators):
        sys.exit(f"the plan has {drawn} boxes for {operators} operators")
    state = d.find_element(By.ID, "state").text
    if state != "finished":
        sys.exit(f"the finished query's page says {state!r}")
    print(f"plan: {drawn} operator boxes", flush=True)
    d.save_screenshot(str(shots / "query-plan.png"))

    # The Datasets page lists the dataset with its files; a click shows its columns.
    d.get(url + "/datasets")
    table = 'tr[data-table="t"]'
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, table))
    cells = [c.text for c in d.find_elements(By.CSS_SELECTOR, f"{table} td")]
    if cells[1:3] != ["dataset", "csv"]:
        sys.exit(f"the dataset row reads {cells}")
    d.find_element(By.CSS_SELECTOR, table).click()
    columns = [c.text for c in d.find_elements(By.CSS_SELECTOR, "tr.detail:not([hidden]) li")]
    if not columns or not columns[0].startswith("id "):
        sys.exit(f"the dataset's columns read {columns}")
    print(f"datasets: t with {cells[4]} files, columns {len(columns)}", flush=True)
    d.save_screenshot(str(shots / "datasets.png"))

    # The Workers page shows this process.
    d.get(url + "/workers")
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, 'tr[data-worker="local"]'))
    print("workers: this process listed", flush=True)
    d.save_screenshot(str(shots / "workers.png"))


def cluster(d, wait, shots, url, job, stages, executor_pid):
    # The Jobs page lists the job; its link opens the job's page.
    d.get(url + "/jobs")
    row = f'tr[data-job="{job}"]'
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, f'{row}[data-state="Completed"]'))
    d.save_screenshot(str(shots / "jobs.png"))
    fresh(d, f"{row} a", lambda link: link.click())
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#stages tbody tr"))
    shown = len(d.find_elements(By.CSS_SELECTOR, "#stages tbody tr"))
    boxes = len(d.find_elements(By.CSS_SELECTOR, "#stage-graph svg g.stage"))
    if shown != int(stages) or boxes != int(stages):
        sys.exit(f"the job page shows {shown} stage rows and {boxes} boxes for {stages} stages")
    lanes = d.execute_script(
        "return [...document.querySelectorAll('#task-stream [data-lane]')]"
        ".map((l) => l.dataset.lane);"
    )
    tasks = len(d.find_elements(By.CSS_SELECTOR, "#task-stream rect.task"))
    if not lanes or tasks == 0:
        sys.exit(f"the task stream has lanes {lanes} and {tasks} tasks")
    print(f"job: {shown} stages, {tasks} tasks on {len(lanes)} executor lanes", flush=True)
    d.save_screenshot(str(shots / "job.png"))

    # The Workers page lists the executors, alive, and the lanes were theirs.
    d.get(url + "/workers")
    alive = 'tr[data-state="alive"]'
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, alive)) == 2)
    ids = d.execute_script(
        "return [...document.querySelectorAll('tr[data-worker]')].map((r) => r.dataset.worker);"
    )
    if not set(lanes) <= set(ids):
        sys.exit(f"task lanes {lanes} are not among the executors {ids}")
    print(f"workers: {len(ids)} executors alive", flush=True)
    d.save_screenshot(str(shots / "workers-alive.png"))

    # An executor killed (no goodbye) is marked dead once the scheduler gives up on it.
    os.kill(int(executor_pid), signal.SIGKILL)
    WebDriverWait(d, 120, poll_frequency=0.5).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, 'tr[data-state="dead"]')
    )
    left = len(d.find_elements(By.CSS_SELECTOR, alive))
    if left != 1:
        sys.exit(f"{left} executors alive after one was killed")
    print("workers: the killed executor is marked dead", flush=True)
    d.save_screenshot(str(shots / "workers-dead.png"))


def main():
    mode, url, *rest, shots = sys.argv[1:]
    shots = pathlib.Path(shots)
    shots.mkdir(parents=True, exist_ok=True)
    d = browser()
    wait = WebDriverWait(d, 60, poll_frequency=0.1)
    try:
        {"local": local, "cluster": cluster}[mode](d, wait, shots, url, *rest)
        # The page scripts ran without errors.
        errors = [e for e in d.get_log("browser") if e.get("level") == "SEVERE"]
        if errors:
            sys.exit(f"errors in the browser console: {errors}")
    finally:
        d.quit()


if __name__ == "__main__":
    started = time.monotonic()
    main()
    print(f"browser scenarios passed in {time.monotonic() - started:.1f} s")
