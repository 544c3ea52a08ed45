"""Runs a dyno's processes as one: starts them in order, and stops them all when one of them stops.

    python -m pipeline.supervisor SPEC_JSON

The worker dyno runs the Dagster code server and the Dagster daemon side by side (see
``pipeline.heroku.worker``). Heroku restarts a dyno when its Procfile process exits, so this
process stands for both: when either exits, the other is stopped and this process exits
non-zero, and Heroku restarts the dyno. It imports nothing but the standard library, so it
adds only a bare interpreter to the dyno's memory.

``SPEC_JSON`` is ``{"processes": [{"name", "argv", "ready_socket"?}], "runtime_dir"?}``. A
process with ``ready_socket`` must accept connections on that Unix socket before the next
process starts (the code server binds it once it has loaded the definitions). ``runtime_dir``
is removed when everything has stopped.

Stopping: Heroku sends SIGTERM to every process of the dyno, and honcho to the whole process
group, so the children normally get the signal at the same time as this process. This
process therefore gives them :data:`GRACE_SECONDS` to exit on their own before it forwards
the signal (a second SIGTERM would cut the daemon's own shutdown short), and kills what is
left :data:`KILL_AFTER_SECONDS` later, as Heroku does after 30 s.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

POLL_SECONDS = 0.2
# How long a process may take to open its ready_socket (Dagster's default code server startup timeout).
READY_TIMEOUT_SECONDS = 180
GRACE_SECONDS = 5
KILL_AFTER_SECONDS = 20


@dataclass(frozen=True)
class Process:
    name: str
    argv: list[str]
    ready_socket: str | None = None


class Supervisor:
    def __init__(self, processes: list[Process]) -> None:
        self.processes = processes
        self.running: list[tuple[Process, subprocess.Popen]] = []
        self.stop_requested_at: float | None = None

    def request_stop(self, signum: int, _frame: object) -> None:
        if self.stop_requested_at is None:
            print(f"supervisor: {signal.Signals(signum).name} received; stopping", flush=True)
            self.stop_requested_at = time.monotonic()

    def run(self) -> int:
        for process in self.processes:
            if self.stop_requested_at is not None:
                break
            self.running.append((process, subprocess.Popen(process.argv)))
            if process.ready_socket and not self._wait_until_ready(process, self.running[-1][1]):
                return self._stop_all(forward_now=True, code=1)
        while self.stop_requested_at is None:
            for process, popen in self.running:
                code = popen.poll()
                if code is not None:
                    print(f"supervisor: {process.name} exited with code {code}; stopping the others", flush=True)
                    return self._stop_all(forward_now=True, code=code or 1)
            time.sleep(POLL_SECONDS)
        return self._stop_all(forward_now=False, code=0)

    def _wait_until_ready(self, process: Process, popen: subprocess.Popen) -> bool:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while self.stop_requested_at is None and popen.poll() is None:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                try:
                    probe.connect(str(process.ready_socket))
                    return True
                except OSError:
                    pass
            if time.monotonic() > deadline:
                print(f"supervisor: {process.name} did not open {process.ready_socket} in {READY_TIMEOUT_SECONDS} s")
                return False
            time.sleep(POLL_SECONDS)
        if popen.poll() is not None:
            print(f"supervisor: {process.name} exited with code {popen.returncode} before it was ready", flush=True)
            return False
        return True  # a stop was requested: run() stops what is running

    def _stop_all(self, forward_now: bool, code: int) -> int:
        started = time.monotonic()
        forwarded = False
        while any(popen.poll() is None for _, popen in self.running):
            waited = time.monotonic() - started
            if not forwarded and (forward_now or waited > GRACE_SECONDS):
                self._signal_running(signal.SIGTERM)
                forwarded = True
            if waited > GRACE_SECONDS + KILL_AFTER_SECONDS:
                self._signal_running(signal.SIGKILL)
            time.sleep(POLL_SECONDS)
        return code

    def _signal_running(self, signum: int) -> None:
        for _, popen in self.running:
            if popen.poll() is None:
                popen.send_signal(signum)


def main(argv: list[str]) -> int:
    spec = json.loads(argv[1])
    supervisor = Supervisor([Process(**process) for process in spec["processes"]])
    signal.signal(signal.SIGTERM, supervisor.request_stop)
    signal.signal(signal.SIGINT, supervisor.request_stop)
    try:
        return supervisor.run()
    finally:
        if spec.get("runtime_dir"):
            shutil.rmtree(spec["runtime_dir"], ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
