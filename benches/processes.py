"""Strata processes for the Python benches: the release binary, a scheduler and executors on
loopback, and CPU time read from /proc (Linux)."""

import os
import pathlib
import shutil
import subprocess
import tempfile
import threading

ROOT = pathlib.Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")


def release_binary():
    target = os.environ.get("CARGO_TARGET_DIR", str(ROOT / "target"))
    return os.path.join(target, "release", "strata")


def cpu_seconds(pid):
    """User plus system CPU time of a process, in seconds (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


class Server:
    """`strata ARGS`, started and waited for until it announces its address after `marker`."""

    def __init__(self, exe, args, marker):
        self.args = args
        self.work_dir = None
        if args[0] == "executor":
            self.work_dir = tempfile.mkdtemp(prefix="strata-executor-")
            args = args + ["--work-dir", self.work_dir]
        self.proc = subprocess.Popen(
            [exe] + args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        line = self.proc.stderr.readline()
        if marker not in line:
            self.stop()
            raise RuntimeError(f"strata {' '.join(args)}: unexpected first line: {line!r}")
        self.addr = line.split(marker, 1)[1].split()[0]
        # Keep reading its log so it never blocks on a full pipe.
        threading.Thread(target=lambda: [None for _ in self.proc.stderr], daemon=True).start()

    @property
    def pid(self):
        return self.proc.pid

    def stop(self, signal=None):
        if self.proc.poll() is None:
            if signal is None:
                self.proc.kill()
            else:
                self.proc.send_signal(signal)
        self.proc.wait()
        if self.work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)


def scheduler(exe, port=0):
    return Server(exe, ["scheduler", "--bind", f"127.0.0.1:{port}"], "listening on df://")


def executor(exe, scheduler_addr, slots=2):
    return Server(
        exe,
        ["executor", "--scheduler", scheduler_addr, "--bind", "127.0.0.1:0", "--slots", str(slots)],
        "serving shuffle data on ",
    )
