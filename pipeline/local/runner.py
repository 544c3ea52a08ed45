"""Running a local stand-in: in a background thread (tests, the demo) or in the foreground (the CLI)."""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any, Generic, Self, TypeVar

import uvicorn

from pipeline.local.chat_service import Answerer, ChatService, LoggedChatRequest
from pipeline.local.config import ChatServiceConfig, EmbeddingServiceConfig, ServiceConfig
from pipeline.local.embedding_service import EmbeddingService, LoggedEmbeddingRequest, VectorSource
from pipeline.local.faults import FaultPlan
from pipeline.local.rerank_service import LoggedRequest, RerankService, Scorer
from pipeline.local.service import Logged, StandInService

log = logging.getLogger(__name__)

LoggedT = TypeVar("LoggedT", bound=Logged)


class LocalService(Generic[LoggedT]):
    """Runs a stand-in under uvicorn in a background thread; use as a context manager."""

    def __init__(
        self, service: StandInService[Any, LoggedT], *, host: str = "127.0.0.1", port: int = 0, warm: bool = False
    ) -> None:
        self.service = service
        self.host = host
        self._requested_port = port
        self._warm = warm
        self._socket: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._socket is None:
            raise RuntimeError(f"{type(self).__name__} is not running")
        return self._socket.getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def requests(self) -> list[LoggedT]:
        return self.service.requests

    @property
    def faults(self) -> FaultPlan:
        return self.service.faults

    def start(self, ready_timeout: float = 10.0) -> None:
        if self._thread is not None:
            raise RuntimeError(f"{type(self).__name__} is already running")
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
            name=type(self).__name__,
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + ready_timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.service.description} did not start on {self.host}:{self._requested_port}")
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

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class LocalRerankService(LocalService[LoggedRequest]):
    """The ``/v1/rerank`` stand-in in a background thread."""

    def __init__(self, config: ServiceConfig, *, scorer: Scorer, **options: Any) -> None:
        super().__init__(RerankService(config, scorer), **options)


class LocalEmbeddingService(LocalService[LoggedEmbeddingRequest]):
    """The ``/v1/embeddings`` stand-in in a background thread."""

    def __init__(self, config: EmbeddingServiceConfig, *, vectors: VectorSource, **options: Any) -> None:
        super().__init__(EmbeddingService(config, vectors), **options)


class LocalChatService(LocalService[LoggedChatRequest]):
    """The ``/v1/chat/completions`` stand-in in a background thread."""

    def __init__(self, config: ChatServiceConfig, *, answerer: Answerer, **options: Any) -> None:
        super().__init__(ChatService(config, answerer), **options)


def run_service(service: StandInService[Any, Any], *, host: str = "127.0.0.1", port: int, warm: bool = True) -> None:
    """Serve ``service`` in the foreground until interrupted."""
    if warm:
        service.warm()
    log.info("%s on http://%s:%d", service.description, host, port)
    uvicorn.run(service.app, host=host, port=port, log_level="info")
