"""The worker dyno's supervisor with real processes: start order, stopping together, exit codes.

And the worker's reading of the workspace file it starts code servers from.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.heroku import CodeLocation, ProcessConfigurationError, workspace_locations

REPO = Path(__file__).resolve().parents[1]
# A child that records its PID, then waits to be stopped; on SIGTERM it records that and exits 0.
WAITER = """
import signal, sys, time
from pathlib import Path
signal.signal(signal.SIGTERM, lambda *_: (Path(sys.argv[1]).write_text("terminated"), sys.exit(0)))
Path(sys.argv[1]).write_text("started")
time.sleep(120)
"""
# Exits with code 3 once the waiter whose file it is given has started.
QUIT_ONCE_STARTED = """
import sys, time
from pathlib import Path
while not (Path(sys.argv[1]).exists() and Path(sys.argv[1]).read_text() == "started"):
    time.sleep(0.05)
sys.exit(3)
"""
# Binds a Unix socket after a delay, then waits like WAITER.
LATE_LISTENER = """
import socket, sys, time
from pathlib import Path
time.sleep(1)
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
server.bind(sys.argv[1])
server.listen()
Path(sys.argv[2]).write_text("listening")
time.sleep(120)
"""
# Records whether the socket accepted a connection when it started.
SOCKET_CHECKER = """
import socket, sys
from pathlib import Path
probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    probe.connect(sys.argv[1])
    Path(sys.argv[2]).write_text("connected")
except OSError as error:
    Path(sys.argv[2]).write_text(f"refused: {error}")
"""


def _python(code: str, *arguments: object) -> list[str]:
    return [sys.executable, "-c", code, *map(str, arguments)]


def _supervise(processes: list[dict], runtime_dir: Path | None = None, **popen) -> subprocess.Popen:
    spec = {"processes": processes, "runtime_dir": str(runtime_dir) if runtime_dir else None}
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline.supervisor", json.dumps(spec)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **popen,
    )


def _wait_for(path: Path, content: str, supervisor: subprocess.Popen) -> None:
    while not (path.exists() and path.read_text() == content):
        assert supervisor.poll() is None, supervisor.stdout.read()
        time.sleep(0.05)


def test_when_one_process_exits_the_others_are_stopped_and_its_code_is_the_dyno_s(tmp_path: Path):
    waiter = tmp_path / "waiter"
    supervisor = _supervise(
        [
            {"name": "waiter", "argv": _python(WAITER, waiter)},
            {"name": "quitter", "argv": _python(QUIT_ONCE_STARTED, waiter)},
        ]
    )
    assert supervisor.wait(60) == 3
    assert waiter.read_text() == "terminated"
    assert "quitter exited with code 3; stopping the others" in supervisor.stdout.read()


def test_a_clean_exit_of_one_process_still_restarts_the_dyno(tmp_path: Path):
    supervisor = _supervise(
        [
            {"name": "waiter", "argv": _python(WAITER, tmp_path / "waiter")},
            {"name": "done", "argv": _python("pass")},
        ]
    )
    assert supervisor.wait(60) == 1


def test_the_next_process_starts_only_once_the_ready_socket_accepts(tmp_path: Path):
    socket_path, listening, checked = tmp_path / "server.sock", tmp_path / "listening", tmp_path / "checked"
    supervisor = _supervise(
        [
            {
                "name": "server",
                "argv": _python(LATE_LISTENER, socket_path, listening),
                "ready_socket": str(socket_path),
            },
            {"name": "client", "argv": _python(SOCKET_CHECKER, socket_path, checked)},
        ]
    )
    # The client exits once it has checked, which stops the server in turn.
    assert supervisor.wait(60) == 1
    assert checked.read_text() == "connected"


def test_a_process_that_exits_before_it_is_ready_stops_the_start(tmp_path: Path):
    never_started = tmp_path / "next"
    supervisor = _supervise(
        [
            {"name": "broken", "argv": _python("import sys; sys.exit(2)"), "ready_socket": str(tmp_path / "x.sock")},
            {"name": "next", "argv": _python(WAITER, never_started)},
        ]
    )
    assert supervisor.wait(60) == 1
    assert "broken exited with code 2 before it was ready" in supervisor.stdout.read()
    assert not never_started.exists()


def test_sigterm_to_the_supervisor_alone_reaches_the_processes_and_removes_the_runtime_dir(tmp_path: Path):
    first, second, runtime_dir = tmp_path / "first", tmp_path / "second", tmp_path / "runtime"
    runtime_dir.mkdir()
    supervisor = _supervise(
        [
            {"name": "first", "argv": _python(WAITER, first)},
            {"name": "second", "argv": _python(WAITER, second)},
        ],
        runtime_dir,
    )
    _wait_for(first, "started", supervisor)
    _wait_for(second, "started", supervisor)
    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(60) == 0
    assert (first.read_text(), second.read_text()) == ("terminated", "terminated")
    assert not runtime_dir.exists()


def test_sigterm_to_the_whole_group_as_heroku_sends_it_stops_everything_once(tmp_path: Path):
    first, second = tmp_path / "first", tmp_path / "second"
    # Each child counts the SIGTERMs it gets; the supervisor must not add a second one.
    counter = """
import signal, sys, time
from pathlib import Path
count = 0
def on_term(*_):
    global count
    count += 1
    Path(sys.argv[1]).write_text(f"terminated {count}")
signal.signal(signal.SIGTERM, on_term)
Path(sys.argv[1]).write_text("started")
while count == 0:
    time.sleep(0.05)
time.sleep(1)  # a shutdown that takes a moment
sys.exit(0)
"""
    supervisor = _supervise(
        [{"name": "first", "argv": _python(counter, first)}, {"name": "second", "argv": _python(counter, second)}],
        start_new_session=True,
    )
    _wait_for(first, "started", supervisor)
    _wait_for(second, "started", supervisor)
    os.killpg(supervisor.pid, signal.SIGTERM)
    assert supervisor.wait(60) == 0
    assert (first.read_text(), second.read_text()) == ("terminated 1", "terminated 1")


def test_the_repository_workspace_names_the_pipeline_location():
    assert workspace_locations(REPO / "workspace.yaml") == [CodeLocation("pipeline", "pipeline.definitions")]


@pytest.mark.parametrize(
    "load_from",
    [
        [{"grpc_server": {"host": "localhost", "port": 4000}}],
        [{"python_module": {"location_name": "no module"}}],
        [{"python_module": {"module_name": "pipeline.definitions", "executable_path": "/usr/bin/python"}}],
        [],
    ],
)
def test_a_workspace_the_worker_cannot_start_is_refused_naming_the_file(tmp_path: Path, load_from):
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(json.dumps({"load_from": load_from}))
    with pytest.raises(ProcessConfigurationError, match=str(workspace)):
        workspace_locations(workspace)


def test_a_bare_module_name_is_a_location_of_that_name(tmp_path: Path):
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text("load_from:\n  - python_module: pipeline.definitions\n")
    assert workspace_locations(workspace) == [CodeLocation("pipeline.definitions", "pipeline.definitions")]
