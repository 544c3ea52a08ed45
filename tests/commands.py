"""Running a long-lived command (a stand-in service, a Chroma server) as a real process, as a user would."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_service_command(
    command: Sequence[str], environment: Mapping[str, str], url: str, *, timeout: float = 60, quiet: bool = False
) -> subprocess.Popen[str]:
    """Start ``command`` and wait until ``{url}/health`` answers 200; its output (both streams) is piped,
    or dropped when ``quiet`` (a long benchmark: a pipe nobody reads would fill and stall the service)."""
    process = subprocess.Popen(
        command,
        env=dict(environment),
        stdout=subprocess.DEVNULL if quiet else subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            output, _ = process.communicate()
            raise AssertionError(f"the service exited with {process.returncode}: {output}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            stop_service_command(process)
            raise AssertionError(f"the service did not answer {url}/health within {timeout:g}s")
        time.sleep(0.2)


def stop_service_command(process: subprocess.Popen[str]) -> str:
    """Interrupt the service as Ctrl-C would and return everything it printed."""
    process.send_signal(signal.SIGINT)
    try:
        output, _ = process.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
    return output


@contextmanager
def chroma_server_on_loopback(directory: Path) -> Iterator[int]:
    """A Chroma server (the ``chroma`` executable of this environment's chromadb) storing under ``directory``,
    started with this process's environment; yields its port."""
    port = free_port()
    log_path = directory / "chroma-server.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("chroma")),
                "run",
                "--path",
                str(directory / "chroma-server"),
                "--port",
                str(port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/api/v2/heartbeat", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert server.poll() is None and time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.2)
            yield port
        finally:
            server.terminate()
            server.wait(timeout=30)
