"""The Procfile's process types: ``release`` migrates storage, ``web`` serves the UI, ``worker`` runs the daemon.

Each dyno has its own ephemeral disk, so every process writes the instance configuration
(:mod:`pipeline.instance`) at boot from the config vars rather than reading a file left behind.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipeline import settings
from pipeline.instance import prepare_instance, state_store_url, uses_postgres

logger = logging.getLogger("pipeline.heroku")

# Statement timeout and pool sizes for the webserver's storage connections. Heroku Postgres
# Essential plans allow 20 connections in all, shared with the daemon, its code server and runs.
WEB_DB_STATEMENT_TIMEOUT_MS = 15_000
WEB_DB_POOL_RECYCLE_SECONDS = 3_600
WEB_DB_POOL_MAX_OVERFLOW = 5
INTERRUPTED_RUN_MESSAGE = "The worker dyno restarted while this run was executing; the run did not finish."


class ProcessConfigurationError(RuntimeError):
    """A config var the process needs is missing or unusable; the message names it."""


def on_heroku() -> bool:
    return settings.is_set("DYNO")


def _require_durable_storage(process: str) -> None:
    # Without DATABASE_URL each dyno would keep its own SQLite runs on a disk wiped daily: the UI
    # (web) would never see the runs the daemon (worker) executes.
    if on_heroku() and not uses_postgres():
        raise ProcessConfigurationError(
            f"{process}: DATABASE_URL is not set; attach Heroku Postgres (heroku addons:create heroku-postgresql) "
            "so the web and worker dynos share Dagster's storage"
        )


def release() -> int:
    """Create or migrate Dagster's storage and the pipeline's tables; a failure stops the release."""
    import dagster as dg

    from pipeline.store.migrate import head_revisions, upgrade_schema
    from pipeline.store.state import create_state_engine

    _require_durable_storage("release")
    prepare_instance()
    with dg.DagsterInstance.get() as instance:
        instance.upgrade(print_fn=logger.info)
    engine = create_state_engine(state_store_url())
    try:
        upgrade_schema(engine)
    finally:
        engine.dispose()
    print(
        "release: Dagster storage and pipeline tables are up to date "
        f"({'PostgreSQL' if uses_postgres() else 'SQLite'}; "
        f"pipeline schema at revision {', '.join(head_revisions())})"
    )
    return 0


def web_password() -> str:
    password = settings.value("WEB_PASSWORD") or ""
    if on_heroku() and not password:
        raise ProcessConfigurationError(
            "web: WEB_PASSWORD is not set; refusing to serve the Dagster UI without authentication "
            "(heroku config:set WEB_PASSWORD=...)"
        )
    return password


def web(workspace: Path) -> int:
    """Serve the Dagster UI on ``$PORT``, behind basic authentication when ``WEB_PASSWORD`` is set."""
    password = web_password()
    _require_durable_storage("web")

    import dagster as dg
    import uvicorn
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import WorkspaceFileTarget
    from dagster_webserver import __version__
    from dagster_webserver.app import create_app_from_workspace_process_context
    from starlette.types import ASGIApp

    from pipeline.webauth import BasicAuthMiddleware, proxy_header_options

    prepare_instance()
    port = settings.integer("PORT", minimum=1)
    with (
        dg.DagsterInstance.get() as instance,
        WorkspaceProcessContext(
            instance,
            version=__version__,
            read_only=False,
            workspace_load_target=WorkspaceFileTarget(paths=[str(workspace)]),
        ) as workspace_context,
    ):
        instance.optimize_for_webserver(
            WEB_DB_STATEMENT_TIMEOUT_MS, WEB_DB_POOL_RECYCLE_SECONDS, WEB_DB_POOL_MAX_OVERFLOW
        )
        app: ASGIApp = create_app_from_workspace_process_context(workspace_context)
        if password:
            app = BasicAuthMiddleware(
                app, username=settings.string("WEB_USERNAME"), password=password, behind_router=on_heroku()
            )
        else:
            logger.warning("WEB_PASSWORD is not set: the Dagster UI is served without authentication (local use only)")
        # Heroku routes to any interface; locally, loopback keeps an unauthenticated UI private.
        host = "0.0.0.0" if on_heroku() or password else "127.0.0.1"
        print(f"web: serving the Dagster UI on http://{host}:{port}", flush=True)
        uvicorn.run(app, host=host, port=port, log_level="warning", **proxy_header_options(on_heroku()))
    return 0


def worker(workspace: Path) -> int:
    """Run the Dagster daemon (schedules, sensors, automation, the run queue) and the code server its runs start in.

    The daemon does not start the code server itself: a daemon-managed code server is replaced
    by a fresh one every minute, and one that is executing a run lives until the run ends, so a
    long run kept two or three code servers of 170 MB each on the dyno. Here the dyno starts one
    code server per location of ``workspace`` and the daemon connects to it; the supervisor
    (:mod:`pipeline.supervisor`) stands for both, so the dyno restarts if either exits.
    """
    import dagster as dg

    _require_durable_storage("worker")
    prepare_instance()
    with dg.DagsterInstance.get() as instance:
        interrupted = fail_interrupted_runs(instance)
    if interrupted:
        print(
            f"worker: marked {len(interrupted)} run(s) interrupted by the restart as failed: {', '.join(interrupted)}"
        )
    # Beside this interpreter first: the venv's bin is not on PATH when started as .venv/bin/pipeline.
    beside = Path(sys.executable).with_name("dagster-daemon")
    daemon = str(beside) if beside.exists() else shutil.which("dagster-daemon")
    if daemon is None:
        raise ProcessConfigurationError("worker: dagster-daemon is not installed in this environment")
    # Short and private: a Unix socket path may not exceed about 100 bytes.
    runtime_dir = Path(tempfile.mkdtemp(prefix="worker-"))
    locations = workspace_locations(workspace)
    sockets = [str(runtime_dir / f"code-server-{number}.sock") for number in range(len(locations))]
    code_servers = [_code_server(location, socket) for location, socket in zip(locations, sockets, strict=True)]
    daemon_workspace = runtime_dir / "workspace.yaml"
    entries = [
        {"grpc_server": {"socket": socket, "location_name": location.name}}
        for location, socket in zip(locations, sockets, strict=True)
    ]
    daemon_workspace.write_text(yaml.safe_dump({"load_from": entries}))
    spec = {
        "processes": [*code_servers, {"name": "dagster-daemon", "argv": [daemon, "run", "-w", str(daemon_workspace)]}],
        "runtime_dir": str(runtime_dir),
    }
    print("worker: starting the code server and the Dagster daemon", flush=True)
    # exec: the supervisor becomes the dyno's process, and this interpreter's imports (Dagster) go.
    os.execv(sys.executable, [sys.executable, "-m", "pipeline.supervisor", json.dumps(spec)])


# What a workspace's python_module entry may say for the worker to start its code server.
_LOCATION_KEYS = {"module_name", "location_name", "working_directory"}


@dataclass(frozen=True)
class CodeLocation:
    """A ``python_module`` entry of the workspace file."""

    name: str
    module: str
    working_directory: str | None = None


def workspace_locations(workspace: Path) -> list[CodeLocation]:
    """The workspace file's code locations; each must be a ``python_module`` with a ``module_name``."""
    try:
        entries = yaml.safe_load(workspace.read_text(encoding="utf-8"))["load_from"]
    except (OSError, yaml.YAMLError, TypeError, KeyError) as error:
        raise ProcessConfigurationError(f"worker: {workspace}: no load_from list ({error})") from None
    locations = []
    for number, entry in enumerate(entries or [], start=1):
        module = entry.get("python_module") if isinstance(entry, dict) else None
        if isinstance(module, str):
            module = {"module_name": module}
        if not isinstance(module, dict) or not module.get("module_name") or set(module) - _LOCATION_KEYS:
            raise ProcessConfigurationError(
                f"worker: {workspace}: load_from entry {number} must be a python_module with module_name "
                f"(and optionally {', '.join(sorted(_LOCATION_KEYS - {'module_name'}))})"
            )
        locations.append(
            CodeLocation(
                name=module.get("location_name", module["module_name"]),
                module=module["module_name"],
                working_directory=module.get("working_directory"),
            )
        )
    if not locations:
        raise ProcessConfigurationError(f"worker: {workspace}: load_from lists no code location")
    return locations


def _code_server(location: CodeLocation, socket: str) -> dict[str, Any]:
    argv = [sys.executable, "-m", "dagster", "api", "grpc", "--module-name", location.module]
    argv += ["--location-name", location.name, "--socket", socket, "--log-level", "warning"]
    if location.working_directory:
        argv += ["--working-directory", location.working_directory]
    return {"name": f"code server {location.name}", "argv": argv, "ready_socket": socket}


def fail_interrupted_runs(instance) -> list[str]:
    """Mark runs left STARTING or STARTED by a previous worker as failed; returns their IDs.

    Runs execute only on the one worker dyno, so when it boots none of them can still be alive;
    failing them at once frees the run queue (and lets run retries resubmit them) instead of
    waiting for run monitoring's timeout.
    """
    import dagster as dg

    runs = instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]))
    for run in runs:
        instance.report_run_failed(run, INTERRUPTED_RUN_MESSAGE)
    return [run.run_id for run in runs]
