#!/usr/bin/env python3
"""How the dashboard holds up on a job of many tasks.

Starts a scheduler and two executors on loopback (`strata scheduler`, `strata executor`),
runs one aggregation split into PARTITIONS partitions (a stage of that many tasks), and
while it runs and after it, times the scheduler's dashboard answer for the job
(`/api/cluster/jobs/ID`: stages and the bounded task stream) and its tasks per executor
(`/api/workers`), next to Ballista's own `/api/job/ID/stages`, which lists every task
(`--no-ballista` leaves it out: it takes minutes on jobs of many thousand tasks).

    python3 benches/dashboard_tasks.py [--partitions 4000] [--cargo-profile dev] [--no-ballista]
"""

import argparse
import json
import pathlib
import re
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benches"))
from compare import cargo_executable  # noqa: E402


def get(url):
    start = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as r:
        body = r.read()
    return time.perf_counter() - start, body


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--partitions", type=int, default=4000)
    p.add_argument("--cargo-profile", default="dev")
    p.add_argument("--strata", help="a strata executable to use instead of building one")
    p.add_argument("--no-ballista", action="store_true",
                   help="do not time Ballista's own stages answer")
    a = p.parse_args()
    exe = a.strata or cargo_executable(["build", "--bin", "strata"], "strata", a.cargo_profile)
    logs = pathlib.Path(tempfile.mkdtemp(prefix="strata-tasks-"))
    procs = []

    def start(args, name):
        f = open(logs / f"{name}.log", "w")
        procs.append(subprocess.Popen([exe, *args], stdout=subprocess.DEVNULL, stderr=f, cwd=ROOT))
        return logs / f"{name}.log"

    try:
        log = start(["scheduler", "--bind", "127.0.0.1:0"], "scheduler")
        addr = None
        while addr is None:
            found = re.search(r"listening on df://(\S+)", log.read_text())
            addr = found and found.group(1)
            time.sleep(0.05)
        for i in range(2):
            start(["executor", "--scheduler", addr, "--bind", "127.0.0.1:0"], f"executor{i}")
        while len(json.loads(get(f"http://{addr}/api/executors")[1])) < 2:
            time.sleep(0.1)
        sql = "SELECT registration_state, count(*) FROM violations GROUP BY 1"
        client = subprocess.Popen(
            [exe, "-q", "--cluster", f"df://{addr}", "-c",
             f"SET datafusion.execution.target_partitions = {a.partitions}", "-c", sql],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        )
        job = None
        samples = []

        def sample(job):
            t_dash, body = get(f"http://{addr}/api/cluster/jobs/{job}")
            t_workers, _ = get(f"http://{addr}/api/workers")
            t_raw, raw = (float("nan"), b"") if a.no_ballista else get(
                f"http://{addr}/api/job/{job}/stages")
            stats = json.loads(body)
            tasks = sum(s["tasks"] for s in stats["stage_list"])
            return tasks, t_dash, len(body), t_workers, t_raw, len(raw), len(stats["task_stream"])

        while client.poll() is None or job is None:
            jobs = json.loads(get(f"http://{addr}/api/cluster/jobs")[1])
            if jobs:
                job = jobs[0]["job_id"]
                samples.append(sample(job))
            if client.poll() is not None and job is not None:
                break
            time.sleep(0.5)
        client.wait()
        if client.returncode != 0:
            sys.exit(f"the query failed: {client.stderr.read()}")
        samples.append(sample(job))
        print("tasks  dashboard ms  dashboard KiB  workers ms  ballista stages ms  ballista KiB")
        for tasks, td, nd, tw, tr, nr, _ in samples:
            print(f"{tasks:6}  {td * 1e3:12.1f}  {nd / 1024:13.1f}  {tw * 1e3:10.1f}  "
                  f"{tr * 1e3:18.1f}  {nr / 1024:12.1f}")
        print(f"task stream kept {samples[-1][6]} of {samples[-1][0]} tasks")
    finally:
        for proc in procs:
            proc.terminate()


if __name__ == "__main__":
    main()
