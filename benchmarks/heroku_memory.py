"""Peak memory of each Heroku dyno (web, worker) through a deploy, an ingest run and a context-set run.

    uv run python benchmarks/heroku_memory.py [--corpus demo|postgresql] [--embeddings local|remote]

Boots the Procfile exactly as the deploy tests do (tests/deploy/heroku_app.py: honcho, a fresh
PostgreSQL database, the local rerank add-on) against a corpus served on loopback: the demo site
(36 pages), or the PostgreSQL 15 manual (Debian ``postgresql-doc-15``, 1,169 pages) with the
queries of its labelled set. Embeddings are computed on the worker by the local model
(``local``) or by an embeddings add-on (``remote``), played by the local ``--fast`` stand-in
with vectors of Cohere Embed Multilingual's length (1,024 numbers). Every 0.25 s it samples
each dyno's whole process tree (for the worker: the supervisor, the daemon, the code server and
the run process the code server starts) and prints each dyno's peak per phase and the worker's
per step of each run, with the processes that made it up at that moment.

Honcho's own processes are left out: a Heroku dyno does not run them. Two sums are printed:
RSS (VmRSS), which counts pages shared between processes once per process, so it is an upper
bound of what Heroku's memory accounting sees, and PSS (proportional set size), which splits
each shared page among the processes that map it, so it is what the dyno's processes hold
together.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.ingest_postgresql import CORPUS_DIR  # noqa: E402
from pipeline.demo import serve_directory  # noqa: E402
from pipeline.evaluation.labels import load_labelled_set  # noqa: E402
from tests.conftest import fresh_postgres_database  # noqa: E402
from tests.deploy.heroku_app import HerokuApp, local_heroku_app  # noqa: E402

SAMPLE_SECONDS = 0.25
POSTGRESQL_LABELS = Path(__file__).resolve().parent / "labels" / "postgresql15.yaml"
# A process type that only the local stand-in runs: honcho supervises the Procfile's command.
NOT_ON_A_DYNO = "honcho"


@dataclass(frozen=True)
class ProcessMemory:
    command: str
    rss_mb: float
    pss_mb: float


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        tree.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    return tree


def _kilobytes(text: str, key: str) -> float:
    for line in text.splitlines():
        if line.startswith(key):
            return int(line.split()[1]) / 1024
    return 0.0


def _memory(pid: int) -> ProcessMemory | None:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        rss = _kilobytes(Path(f"/proc/{pid}/status").read_text(), "VmRSS:")
        pss = _kilobytes(Path(f"/proc/{pid}/smaps_rollup").read_text(), "Pss:")
    except OSError:  # the process ended between the listing and the read
        return None
    return ProcessMemory(command, rss, pss) if rss else None


def tree_memory(root: int) -> list[ProcessMemory]:
    """The processes under ``root`` (itself included) that a dyno would run, largest first."""
    tree, pending, processes = _children(), [root], []
    while pending:
        pid = pending.pop()
        pending.extend(tree.get(pid, []))
        memory = _memory(pid)
        if memory and NOT_ON_A_DYNO not in memory.command:
            processes.append(memory)
    return sorted(processes, key=lambda process: process.rss_mb, reverse=True)


@dataclass(frozen=True)
class Sample:
    at: float  # seconds since the epoch, as Dagster's step times
    dyno: str
    phase: str
    processes: list[ProcessMemory]

    @property
    def rss_mb(self) -> float:
        return sum(process.rss_mb for process in self.processes)

    @property
    def pss_mb(self) -> float:
        return sum(process.pss_mb for process in self.processes)


class Sampler:
    """Samples both dynos' process trees every SAMPLE_SECONDS in a thread, labelled with the current phase."""

    def __init__(self, app: HerokuApp) -> None:
        self.app = app
        self.phase = "boot"
        self.samples: list[Sample] = []
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
                if dyno.popen is not None:
                    self.samples.append(Sample(time.time(), dyno.process, self.phase, tree_memory(dyno.popen.pid)))


def _short(command: str) -> str:
    for marker, name in (
        ("pipeline.supervisor", "supervisor"),  # before "api grpc": its argument holds the code server's command
        ("api grpc", "code server"),
        ("spawn_main", "run process"),
        ("resource_tracker", "resource tracker"),
        ("dagster-daemon", "dagster-daemon"),
        ("pipeline web", "pipeline web (webserver)"),
        ("pipeline worker", "pipeline worker"),
    ):
        if marker in command:
            return name
    return command[:60]


def _ingest_runs(app: HerokuApp) -> list[dict]:
    return [run for run in app.runs() if run["jobName"] == "ingest_source"]


@contextmanager
def corpus_app(corpus: str, root: Path, database: str, remote_embeddings: bool) -> Iterator[HerokuApp]:
    """The local Heroku app crawling ``corpus``, with queries that suit it."""
    if corpus == "demo":
        with local_heroku_app(root, database, remote_embeddings=remote_embeddings) as app:
            yield app
        return
    queries = root / "queries.yaml"
    labelled = load_labelled_set(POSTGRESQL_LABELS)
    queries.write_text(yaml.safe_dump({"queries": [{"id": q.query_id, "query": q.query} for q in labelled.queries]}))
    with serve_directory(CORPUS_DIR) as url:
        source = {
            "name": "postgresql",
            "start_urls": [url + "index.html"],
            "allow_private_hosts": True,
            "max_pages": 2000,
            "max_depth": 10,
        }
        with local_heroku_app(
            root, database, sources=[source], queries=queries, remote_embeddings=remote_embeddings
        ) as app:
            yield app


def _peak(samples: list[Sample]) -> Sample | None:
    return max(samples, key=lambda sample: sample.rss_mb, default=None)


def _parts(sample: Sample) -> str:
    return ", ".join(f"{_short(p.command)} {p.rss_mb:.0f}" for p in sample.processes if p.rss_mb >= 5)


def report(samples: list[Sample], steps: dict[str, list[tuple[str, float, float]]]) -> None:
    """Each dyno's peak per phase, the worker's peak per step of each run, and each dyno's overall peak."""
    print(f"{'dyno':8} {'phase':18} {'RSS MB':>7} {'PSS MB':>7}  processes at the RSS peak (RSS MB)")
    for dyno, phase in dict.fromkeys((sample.dyno, sample.phase) for sample in samples):
        group = [sample for sample in samples if (sample.dyno, sample.phase) == (dyno, phase)]
        peak = _peak(group)
        assert peak is not None
        pss = max(sample.pss_mb for sample in group)
        print(f"{dyno:8} {phase:18} {peak.rss_mb:7.0f} {pss:7.0f}  {_parts(peak)}")
    print(f"\n{'worker, by step':42} {'RSS MB':>7} {'seconds':>8}  processes at the RSS peak (RSS MB)")
    worker = [sample for sample in samples if sample.dyno == "worker"]
    for phase, phase_steps in steps.items():
        for step, begin, end in phase_steps:
            peak = _peak([sample for sample in worker if begin <= sample.at <= end])
            if peak is not None:
                print(f"{phase + ': ' + step:42} {peak.rss_mb:7.0f} {end - begin:8.0f}  {_parts(peak)}")
    for dyno in ("web", "worker"):
        group = [sample for sample in samples if sample.dyno == dyno]
        peak = _peak(group)
        assert peak is not None
        pss = max(sample.pss_mb for sample in group)
        print(f"{dyno} overall peak: RSS {peak.rss_mb:.0f} MB, PSS {pss:.0f} MB")


def _step_times(app: HerokuApp, run_id: str) -> list[tuple[str, float, float]]:
    with app.instance() as instance:
        stats = instance.get_run_step_stats(run_id)
    return [(step.step_key, step.start_time, step.end_time) for step in stats if step.start_time and step.end_time]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", choices=("demo", "postgresql"), default="demo")
    parser.add_argument("--embeddings", choices=("local", "remote"), default="local")
    parser.add_argument("--timeout", type=float, default=3600, help="Seconds each run may take [3600].")
    parser.add_argument("--trace", type=Path, help="Also write every sample (seconds, dyno, phase, processes) here.")
    arguments = parser.parse_args()
    if arguments.corpus == "postgresql" and not CORPUS_DIR.is_dir():
        parser.error(f"{CORPUS_DIR} is missing: install Debian's postgresql-doc-15")
    steps: dict[str, list[tuple[str, float, float]]] = {}
    with (
        tempfile.TemporaryDirectory() as root,
        fresh_postgres_database() as database,
        corpus_app(arguments.corpus, Path(root), database, arguments.embeddings == "remote") as app,
        Sampler(app) as sampler,
    ):
        time.sleep(5)
        sampler.phase = "ingest run"
        deadline = time.monotonic() + arguments.timeout
        while not (done := [run for run in _ingest_runs(app) if run["status"] == "SUCCESS"]):
            failed = any(run["status"] in ("FAILURE", "CANCELED") for run in _ingest_runs(app))
            assert time.monotonic() < deadline and not failed, app.worker.output()[-3000:]
            time.sleep(1)
        steps[sampler.phase] = _step_times(app, done[0]["runId"])
        sampler.phase = "context-set run"
        run_id = app.launch_run("build_context_sets")
        assert app.wait_for_run(run_id, timeout=arguments.timeout) == "SUCCESS", app.worker.output()[-3000:]
        steps[sampler.phase] = _step_times(app, run_id)
        sampler.phase = "idle after runs"
        time.sleep(10)
    print(f"corpus: {arguments.corpus}, embeddings: {arguments.embeddings}")
    report(sampler.samples, steps)
    if arguments.trace:
        with arguments.trace.open("w") as trace:
            for sample in sampler.samples:
                parts = " ".join(f"{_short(p.command)}={p.rss_mb:.0f}" for p in sample.processes)
                trace.write(f"{sample.at:.2f}\t{sample.dyno}\t{sample.phase}\t{sample.rss_mb:.0f}\t{parts}\n")


if __name__ == "__main__":
    main()
