"""Peak memory of each Heroku dyno (web, worker) through a deploy, an ingest run and a context-set run.

    uv run python benchmarks/heroku_memory.py

Boots the Procfile exactly as the deploy tests do (tests/deploy/heroku_app.py: honcho, a fresh
PostgreSQL database, the demo site, the local rerank add-on), then samples every 0.25 s the
resident memory (VmRSS from /proc) of each dyno's whole process tree: for the worker that is
the daemon, its code server and the run process it launches. Prints each dyno's peak per phase
and the processes that made it up at that moment. Summing RSS counts pages shared between
processes twice, so the figures are an upper bound of what Heroku's memory accounting sees.
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.conftest import fresh_postgres_database  # noqa: E402
from tests.deploy.heroku_app import HerokuApp, local_heroku_app  # noqa: E402

SAMPLE_SECONDS = 0.25


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        tree.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    return tree


def _rss_mb(pid: int) -> tuple[float, str]:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return 0.0, ""
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024, command
    return 0.0, command


def tree_rss(root: int) -> tuple[float, list[tuple[float, str]]]:
    tree, pending, processes = _children(), [root], []
    while pending:
        pid = pending.pop()
        pending.extend(tree.get(pid, []))
        rss, command = _rss_mb(pid)
        if rss:
            processes.append((rss, command))
    return sum(rss for rss, _ in processes), sorted(processes, reverse=True)


class Sampler:
    def __init__(self, app: HerokuApp) -> None:
        self.app = app
        self.phase = "boot"
        self.peaks: dict[tuple[str, str], tuple[float, list[tuple[float, str]]]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            for dyno in (self.app.web, self.app.worker):
                if dyno.popen is None:
                    continue
                total, processes = tree_rss(dyno.popen.pid)
                key = (dyno.process, self.phase)
                if total > self.peaks.get(key, (0.0, []))[0]:
                    self.peaks[key] = (total, processes)


def _short(command: str) -> str:
    for marker, name in (
        ("api grpc", "code server"),
        ("execute_run", "run process"),
        ("dagster-daemon", "dagster-daemon"),
        ("pipeline web", "pipeline web (webserver)"),
        ("pipeline worker", "pipeline worker"),
        ("honcho", "honcho"),
    ):
        if marker in command:
            return name
    return command[:60]


def main() -> None:
    with (
        tempfile.TemporaryDirectory() as root,
        fresh_postgres_database() as database,
        local_heroku_app(Path(root), database) as app,
        Sampler(app) as sampler,
    ):
        time.sleep(5)
        sampler.phase = "ingest run"
        deadline = time.monotonic() + 900
        while not any(r["jobName"] == "ingest_source" and r["status"] == "SUCCESS" for r in app.runs()):
            assert time.monotonic() < deadline, app.worker.output()[-3000:]
            time.sleep(1)
        sampler.phase = "context-set run"
        run_id = app.launch_run("build_context_sets")
        assert app.wait_for_run(run_id, timeout=900) == "SUCCESS", app.worker.output()[-3000:]
        sampler.phase = "idle after runs"
        time.sleep(10)
    print(f"{'dyno':8} {'phase':18} {'peak MB':>8}  processes at the peak (MB)")
    for (dyno, phase), (total, processes) in sampler.peaks.items():
        parts = ", ".join(f"{_short(command)} {rss:.0f}" for rss, command in processes if rss >= 5)
        print(f"{dyno:8} {phase:18} {total:8.0f}  {parts}")
    for dyno in ("web", "worker"):
        print(f"{dyno} overall peak: {max(t for (d, _), (t, _) in sampler.peaks.items() if d == dyno):.0f} MB")


if __name__ == "__main__":
    main()
