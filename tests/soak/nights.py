"""Nightly refreshes of an :class:`~tests.soak.site.EvolvingSite` under a seeded schedule of faults.

The deployment is the real one: settings come from the environment (``pipeline.definitions``
builds the resources from it, so this module must be imported after :func:`deployment_env` is
applied), Dagster's storage from ``DAGSTER_HOME``, the rerank endpoint is the local stand-in on
loopback. A night is what the deployment does every night, unwatched:

1. the clock moves a day on: every stored timestamp of the state store moves 24 hours back, so
   the product's own retention and grace periods see the day pass without a fake clock;
2. the site changes as docs teams change it (a page edited, added or deleted);
3. the night's faults are applied;
4. the ``source_partitions_sensor`` ticks and its run requests run; each registered source is
   ingested; retrieval, rerank and context sets are rebuilt, and when rerank failed the context
   sets are materialised alone as well (the automation would, after the next ingest);
5. the faults are lifted and the invariants measured (:class:`NightReport`).
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path

import dagster as dg
import sqlalchemy as sa
import yaml

from pipeline.embedding import MODEL_NAME
from pipeline.heroku import fail_interrupted_runs
from pipeline.local import LocalRerankService
from pipeline.store.lexical import LexicalIndex
from pipeline.store.schema import metadata as state_metadata
from pipeline.store.state import StateStore, sqlite_url
from pipeline.store.vectors import ChromaConnection, VectorIndex
from tests.crawl.site_server import SiteServer
from tests.soak.embedded_poll import EMBEDDED_TEXTS
from tests.soak.site import SECTIONS, EvolvingSite
from tests.support import forget_chroma_clients

REPO = Path(__file__).resolve().parents[2]
SITE_FAULTS = ("maintenance_redirects", "unavailable_503", "not_found_storm", "robots_disallow_all")
FAULTS = (
    *SITE_FAULTS,
    "truncated_sources_file",
    "renamed_source",
    "key_rotation_401",
    "chroma_wiped",
    "killed_mid_embedding",
)
# The source that a rename renames (its URLs stay; only the name in the sources file changes).
RENAMED = {"reference": "api-reference"}


@dataclass
class NightReport:
    night: int
    faults: list[str]
    changes: list[str]
    failed_runs: dict[str, str] = field(default_factory=dict)  # run -> first failure message
    pages_served: int = 0
    pages_lost: int = 0  # indexed on an earlier night and still served, yet missing from Chroma or the lexical index
    pages_pending: int = 0  # served but never indexed yet
    chunks_embedded: int = 0  # texts sent to the embedding model tonight
    chunks_new: int = 0  # chunks whose text no earlier night had stored with its embedding
    chunks_re_embedded: int = 0
    context_sets: int = 0
    context_sets_reranked: int = 0
    stale_publications: int = 0
    secrets_leaked: int = 0
    lost_urls: list[str] = field(default_factory=list)
    leaked_in: list[str] = field(default_factory=list)  # files (relative to the deployment) and "log records"

    def as_dict(self) -> dict:
        return asdict(self)


def deployment_env(workdir: Path, rerank_url: str, rerank_key: str) -> dict[str, str]:
    """The settings a deployment of the soak site has, as environment variables."""
    return {
        "PIPELINE_DATA_DIR": str(workdir / "data"),
        "PIPELINE_SOURCES": str(workdir / "sources.yaml"),
        "PIPELINE_QUERIES": str(workdir / "queries.yaml"),
        "DAGSTER_HOME": str(workdir / "dagster_home"),
        "RERANK_URL": rerank_url,
        "RERANK_KEY": rerank_key,
    }


def schedule(nights: int, seed: int) -> list[list[str]]:
    """Which faults each night gets: every kind at least once (when there are nights enough), more at random.

    Night 1 is the cold ingest and gets none; the rename is permanent, so it comes once."""
    rng = random.Random(seed)
    plan: list[list[str]] = [[] for _ in range(nights)]
    kinds = list(FAULTS)
    rng.shuffle(kinds)
    slots = list(range(1, nights))
    rng.shuffle(slots)
    for kind, slot in zip(kinds, slots, strict=False):
        plan[slot].append(kind)
    repeatable = [kind for kind in FAULTS if kind != "renamed_source"]
    for night in range(1, nights):
        if rng.random() < 0.3:
            extra = rng.choice(repeatable)
            if extra not in plan[night]:
                plan[night].append(extra)
    return plan


class Soak:
    """One deployment, its site and its rerank stand-in, refreshed night after night."""

    def __init__(
        self, workdir: Path, server: SiteServer, rerank: LocalRerankService, seed: int, pages_per_section: int
    ) -> None:
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.server = server
        self.rerank = rerank
        self.rng = random.Random(seed + 1)
        self.site = EvolvingSite.create(server, seed, pages_per_section)
        self.names = {section: section for section in SECTIONS}  # section -> source name in the file
        self.keys_used: list[str] = [os.environ["RERANK_KEY"]]
        self.seen_texts: set[str] = set()
        self.run_ids: list[str] = []
        self._store: StateStore | None = None
        self._poll_engine: sa.Engine | None = None
        self.indexed_before: set[str] = set()  # pages the site serves that were in both indexes some night
        self.text_of: dict[str, str] = {}  # chunk ID -> embedded text, of every chunk ever stored
        # (query, documents) -> {document: relevance score}, as the rerank stand-in answered them
        self.answers: dict[tuple[str, frozenset[str]], dict[str, float]] = {}
        # What the operator sets RERANK_KEY to on the mornings after a rotation, in order.
        self.keys_to_configure: list[str] = []
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (workdir / "dagster_home").mkdir(exist_ok=True)
        (workdir / "dagster_home" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        self.instance = dg.DagsterInstance.get()
        self.log = LogCapture()
        logging.getLogger().addHandler(self.log)
        logging.getLogger().setLevel(logging.INFO)
        self.write_sources(SECTIONS)
        self.write_queries()

    # Inputs -----------------------------------------------------------------------------------------
    def write_sources(self, sections: Iterable[str]) -> None:
        entries = [
            {
                "name": self.names[section],
                "start_urls": [self.site.url(section)],
                "allow_private_hosts": True,
                "discover_sitemaps": False,
            }
            for section in sections
        ]
        Path(os.environ["PIPELINE_SOURCES"]).write_text(yaml.safe_dump({"sources": entries}, sort_keys=False))

    def write_queries(self) -> None:
        """One query per section: the first sentence of a topic page (the site keeps it unless deleted)."""
        queries = []
        for section in SECTIONS:
            first = next(iter(self.site.pages[section].values()))
            queries.append({"id": f"q-{section}", "query": first.paragraphs[0].split(".")[0] + "?"})
            queries.append({"id": f"q-{section}-title", "query": f"What is {first.title}?"})
        Path(os.environ["PIPELINE_QUERIES"]).write_text(yaml.safe_dump({"queries": queries}, sort_keys=False))

    # The night ------------------------------------------------------------------------------------
    def start_worker(self) -> None:
        """Load the definitions afresh, as a dyno does when it (re)starts after its config vars changed:
        endpoints and keys are read from the environment when the code location loads."""
        import pipeline.definitions

        self.defs = importlib.reload(pipeline.definitions).defs
        fail_interrupted_runs(self.instance)  # as the worker process does when it starts

    def night(self, number: int, faults: list[str]) -> NightReport:
        self.start_worker()
        self.age_state(timedelta(hours=24))
        changes = self.site.evolve() if number > 1 else ["cold ingest"]
        report = NightReport(night=number, faults=list(faults), changes=changes)
        section = self.rng.choice(SECTIONS)
        embedded_by_killed_run = 0
        for fault in faults:
            if fault == "truncated_sources_file":
                self.write_sources(SECTIONS[:1])  # cut off at an entry boundary: still valid YAML
            elif fault == "renamed_source":
                self.names.update(RENAMED)
                self.write_sources(SECTIONS)
            elif fault == "key_rotation_401":
                # Tonight the old key gets 401s; the next night runs with the new key pasted with a newline.
                self.rotate_service_key()
                report.changes.append(self.edit_a_top_candidate())
            elif fault == "chroma_wiped":
                self.wipe_chroma()
        if "killed_mid_embedding" in faults:
            report.changes.append(self.site.add_pages(section, 10))
            embedded_by_killed_run = self.kill_an_ingest_midway(self.names[section])
        # Last: changing a page serves the site's true state again, which would lift these.
        for fault in faults:
            if fault in SITE_FAULTS:
                self.site.break_for_the_night(fault, section)
        self.refresh(report)
        report.chunks_embedded += embedded_by_killed_run
        # The morning after: the site is repaired, the sources file fixed, the new key configured.
        self.site.repair()
        self.write_sources(SECTIONS)
        if self.keys_to_configure:
            os.environ["RERANK_KEY"] = self.keys_to_configure.pop(0)
        self.measure(report)
        return report

    def refresh(self, report: NightReport) -> None:
        self.tick_source_sensor(report)
        for source in sorted(self.instance.get_dynamic_partitions("sources")):
            self.run_job("ingest_source", report, partition_key=source)
        result = self.run_job("build_context_sets", report)
        published = any(
            event.asset_key.to_user_string() == "ranked_context_sets"
            for event in result.get_asset_materialization_events()
        )
        if not published:
            # Rerank failed tonight; whatever materialises the context sets next must not publish stale scores.
            self.run_job("build_context_sets", report, asset_selection=[dg.AssetKey("ranked_context_sets")])

    def tick_source_sensor(self, report: NightReport) -> None:
        sensor = self.defs.resolve_sensor_def("source_partitions_sensor")
        resources = {key: self.defs.resources[key] for key in sensor.required_resource_keys}
        with dg.build_sensor_context(instance=self.instance, resources=resources) as context:
            result = sensor(context)
        if isinstance(result, dg.SkipReason):
            return
        for request in result.dynamic_partitions_requests or []:
            if isinstance(request, dg.AddDynamicPartitionsRequest):
                self.instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
            else:
                for key in request.partition_keys:
                    self.instance.delete_dynamic_partition(request.partitions_def_name, key)
        for request in result.run_requests or []:
            if request.job_name == "ingest_source":
                continue  # every registered source is ingested next, as the nightly schedule does
            self.run_job(request.job_name, report, run_config=request.run_config, partition_key=request.partition_key)

    def run_job(self, job_name: str, report: NightReport, **options: object) -> dg.ExecuteInProcessResult:
        job = self.defs.resolve_job_def(job_name)
        result = job.execute_in_process(instance=self.instance, raise_on_error=False, **options)  # type: ignore[arg-type]
        self.run_ids.append(result.run_id)
        for event in result.get_asset_materialization_events():
            if event.asset_key.to_user_string() == "vector_index":
                report.chunks_embedded += int(event.materialization.metadata["texts_embedded"].value)
        if not result.success:
            failures = [
                f"{e.check_name} failed: {e.description} { ({k: v.value for k, v in e.metadata.items()}) }"
                for e in result.get_asset_check_evaluations()
                if not e.passed and e.severity == dg.AssetCheckSeverity.ERROR
            ] or [_why(e) for e in self.events_of(result.run_id) if e.is_step_failure or e.is_run_failure]
            name = f"{job_name}:{options['partition_key']}" if options.get("partition_key") else job_name
            report.failed_runs[name] = (failures[0] if failures else "run failed").strip().splitlines()[0][:300]
        return result

    def events_of(self, run_id: str) -> list[dg.DagsterEvent]:
        return [entry.dagster_event for entry in self.instance.all_logs(run_id) if entry.dagster_event is not None]

    # Faults that are not the site's -----------------------------------------------------------------
    def rotate_service_key(self) -> None:
        new_key = f"soak-key-{self.rng.getrandbits(64):016x}"
        self.keys_used.append(new_key)
        # First pasted with the newline a copy from a terminal brings along, then corrected.
        self.keys_to_configure = [new_key + "\n", new_key]
        config = self.rerank.service.config
        self.rerank.service.config = type(config)(**{**asdict(config), "api_key": new_key})

    def edit_a_top_candidate(self) -> str:
        """Change the best candidate's page, so tonight's candidates differ from the last rerank's."""
        store = self.store()
        candidates = store.rankings.candidates()
        for ranking in candidates.values():
            best = ranking[0].chunk_id
            chunk = store.chunks.by_id([best])[best]
            found = self.site.page_with_text(chunk.text.split(".")[0])
            if found:
                return self.site.edit(*found)
        return "no candidate page to edit"

    def wipe_chroma(self) -> None:
        shutil.rmtree(self.data_dir / "chroma", ignore_errors=True)
        forget_chroma_clients()

    def kill_an_ingest_midway(self, source: str) -> int:
        """Run the source's ingest as a worker process and SIGKILL it while it embeds; returns what it embedded."""
        before = self.embedded_texts()
        command = [
            sys.executable,
            "-m",
            "tests.restart_worker",
            '--run-config={"ops": {"vector_index": {"config": {"save_every": 4}}}}',
            f"ingest:{source}",
        ]
        with (self.workdir / "killed-worker.log").open("ab") as output:
            worker = subprocess.Popen(command, cwd=REPO, env=dict(os.environ), stdout=output, stderr=output)
            deadline = time.monotonic() + 300
            # Polled from child processes (tests/soak/embedded_poll.py), each for a second at most, so the
            # worker's exit is noticed; one that dies, of SIGBUS inside SQLite as the soak once did, is replaced.
            poll = [sys.executable, "-m", "tests.soak.embedded_poll", str(self.data_dir / "state.db"), str(before + 8)]
            while worker.poll() is None and time.monotonic() < deadline:
                if subprocess.run([*poll, "1"], cwd=REPO, capture_output=True).returncode == 0:
                    break
            worker.send_signal(signal.SIGKILL)
            worker.wait()
        forget_chroma_clients()
        return self.embedded_texts() - before

    # Measurements ----------------------------------------------------------------------------------
    def store(self) -> StateStore:
        if self._store is None:
            self._store = StateStore(sqlite_url(self.data_dir))
        return self._store

    def embedded_texts(self) -> int:
        # One engine for the soak's life, its connection kept. While a worker writes, the count is
        # polled from child processes instead (kill_an_ingest_midway).
        if self._poll_engine is None:
            self._poll_engine = sa.create_engine(sqlite_url(self.data_dir), pool_size=1)
        with self._poll_engine.connect() as connection:
            return connection.scalar(sa.text(EMBEDDED_TEXTS)) or 0

    def age_state(self, by: timedelta) -> None:
        """Move every stored timestamp of the state store back by ``by``."""
        if not (self.data_dir / "state.db").exists():
            return
        engine = sa.create_engine(sqlite_url(self.data_dir))
        try:
            with engine.begin() as connection:
                for table in state_metadata.sorted_tables:
                    moments = [c for c in table.columns if isinstance(c.type, sa.DateTime)]
                    if not moments or not sa.inspect(connection).has_table(table.name):
                        continue
                    keys = list(table.primary_key.columns)
                    for row in connection.execute(sa.select(*keys, *moments)).mappings():
                        shifted = {c.name: row[c.name] - by for c in moments if row[c.name] is not None}
                        if shifted:
                            where = sa.and_(*(key == row[key.name] for key in keys))
                            connection.execute(table.update().where(where).values(**shifted))
        finally:
            engine.dispose()

    def measure(self, report: NightReport) -> None:
        store = self.store()
        forget_chroma_clients()
        vectors = VectorIndex(ChromaConnection(data_dir=str(self.data_dir)), MODEL_NAME)
        stored = vectors.collection.get(include=["metadatas"])
        chroma_urls = {metadata["url"] for metadata in stored["metadatas"]}
        lexical_ids = LexicalIndex(self.data_dir).ids()
        chunk_rows = store.chunks.by_id(lexical_ids)
        lexical_urls = {chunk.url for chunk in chunk_rows.values()}
        served = set().union(*(self.site.served_urls(section) for section in SECTIONS))
        indexed = chroma_urls & lexical_urls
        # A page never indexed yet (new while its source's crawl was stopped, or its source orphaned) is pending.
        lost = sorted((served - indexed) & self.indexed_before)
        report.pages_served, report.pages_lost, report.lost_urls = len(served), len(lost), lost[:10]
        report.pages_pending = len(served - indexed - self.indexed_before)
        self.indexed_before |= indexed & served

        stored_chunks = list(store.chunks.iterate())
        self.text_of.update((chunk.chunk_id, chunk.embedding_text) for chunk in stored_chunks)
        # Texts stored and embedded: a killed run's chunks are stored before the ones it did not reach are embedded.
        unembedded = {
            pending.text
            for source in {chunk.source for chunk in stored_chunks}
            for window in store.embeddings.iter_pending(source, MODEL_NAME)
            for pending in window
        }
        texts = {chunk.embedding_text for chunk in stored_chunks} - unembedded
        new_texts = texts - self.seen_texts
        report.chunks_new = len(new_texts)
        report.chunks_re_embedded = max(0, report.chunks_embedded - len(new_texts))
        self.seen_texts |= texts

        report.stale_publications, report.context_sets, report.context_sets_reranked = self.stale_publications(store)
        report.leaked_in = self.places_holding_a_key()
        report.secrets_leaked = len(report.leaked_in)

    def stale_publications(self, store: StateStore) -> tuple[int, int, int]:
        """Context sets published as reranked whose scores are not what the rerank stand-in answered for
        exactly their current candidates (its scores depend on the whole set of documents sent)."""
        for request in self.rerank.requests:
            if request.status == 200 and request.query is not None and request.documents is not None:
                scores = {request.documents[index]: score for index, score in request.results}
                self.answers[(request.query, frozenset(request.documents))] = scores
        self.rerank.service.clear()
        latest = store.context_sets.latest()
        candidates = store.rankings.candidates()
        stale = 0
        for query_id, context_set in latest.items():
            if not context_set.reranked:
                continue
            sent = frozenset(self.text_of.get(c.chunk_id, c.chunk_id) for c in candidates.get(query_id, []))
            answer = self.answers.get((context_set.query, sent))
            if answer is None or any(
                abs(answer[self.text_of[passage["chunk_id"]]] - passage["rerank_score"]) > 1e-6
                for passage in context_set.passages
            ):
                stale += 1
        return stale, len(latest), sum(context_set.reranked for context_set in latest.values())

    def places_holding_a_key(self) -> list[str]:
        """Files of the deployment (state, Chroma, event log, compute logs, output, a killed worker's output) and log
        records of this process holding any rerank key ever used, in any form."""
        forms = set()
        for key in self.keys_used:
            forms |= {key, repr(key)[1:-1], json.dumps(key)[1:-1]}
        needles = [form.encode() for form in forms if len(form) >= 8]
        places = []
        for path in sorted(self.workdir.rglob("*")):
            if path.is_file() and any(needle in path.read_bytes() for needle in needles):
                places.append(str(path.relative_to(self.workdir)))
        logged = self.log.text().encode()
        if any(needle in logged for needle in needles):
            places.append("log records")
        return places


def _why(failure: dg.DagsterEvent) -> str:
    """The innermost error of a failed step or run (a resource that failed to set up, say)."""
    error = failure.step_failure_data.error if failure.is_step_failure else failure.event_specific_data.error
    while error is not None and error.cause is not None:
        error = error.cause
    return error.message if error is not None else failure.message or "failed"


class LogCapture(logging.Handler):
    """Every log record of this process, formatted with its traceback, as an operator's log drain keeps it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def text(self) -> str:
        return "\n".join(self.lines)
