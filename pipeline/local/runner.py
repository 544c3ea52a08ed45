"""Running the local rerank service: in a background thread (tests, the demo) or in the foreground (the CLI)."""

from __future__ import annotations

import logging
import socket
import threading
import time

import uvicorn

from pipeline.local.config import ServiceConfig
from pipeline.local.faults import FaultPlan
from pipeline.local.rerank_service import LoggedRequest, RerankService, Scorer
from pipeline.rerank.contract import RERANK_PATH

log = logging.getLogger(__name__)


class LocalRerankService:
    """Runs a :class:`RerankService` under uvicorn in a background thread; use as a context manager."""

    def __init__(
        self,
        config: ServiceConfig,
        *,
        scorer: Scorer,
        host: str = "127.0.0.1",
        port: int = 0,
        warm: bool = False,
    ) -> None:
        self.service = RerankService(config, scorer)
        self.host = host
        self._requested_port = port
        self._warm = warm
        self._socket: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._socket is None:
            raise RuntimeError("LocalRerankService is not running")
        return self._socket.getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def requests(self) -> list[LoggedRequest]:
        return self.service.requests

    @property
    def faults(self) -> FaultPlan:
        return self.service.faults

    def start(self, ready_timeout: float = 10.0) -> None:
        if self._thread is not None:
            raise RuntimeError("LocalRerankService is already running")
        if self._warm:
            self.service.warm()
        # Binding here (port 0 = any free port) makes the port known before uvicorn starts.
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((self.host, self._requested_port))
        config = uvicorn.Config(
            self.service.app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._socket]},
            name="local-rerank-service",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + ready_timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"local rerank service did not start on {self.host}:{self._requested_port}")
            time.sleep(0.01)

    def stop(self) -> None:
        self.service.close()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = self._socket = None

    def __enter__(self) -> LocalRerankService:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def run_service(
    host: str = "127.0.0.1",
    port: int = 8765,
    *,
    config: ServiceConfig,
    scorer: Scorer,
    warm: bool = True,
) -> None:
    """Serve the local rerank service in the foreground until interrupted."""
    service = RerankService(config, scorer)
    if warm:
        service.warm()
    log.info("local rerank service on http://%s:%d%s", host, port, RERANK_PATH)
    uvicorn.run(service.app, host=host, port=port, log_level="info")
