"""The frontier on an asyncio loop in a daemon thread, handing its results over to the consumer.

The hand-over is bounded: the frontier takes a place in its ``room`` before handing a result
over and the consumer gives it back as it takes the result, so at most ``max_queue`` results
wait, memory stays bounded and each result can be persisted as it arrives.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

from pipeline.crawl.frontier import Frontier
from pipeline.crawl.results import PageResult


@dataclass(frozen=True)
class Finished:
    """Handed over last: the crawl ended, with the error that ended it, if any."""

    error: BaseException | None = None


class LoopThread:
    """Runs the frontier on an event loop in a daemon thread and hands results over."""

    def __init__(self, frontier: Frontier, name: str) -> None:
        self.frontier = frontier
        self.handover: queue.SimpleQueue[PageResult | Finished] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._main: asyncio.Task[None] | None = None
        self._ready = threading.Event()

    def start(self) -> None:
        self.thread.start()
        self._ready.wait()

    def call(self, callback: Callable[[], object]) -> None:
        """Run ``callback`` on the loop thread, if the loop still runs."""
        try:
            if self._loop is not None:
                self._loop.call_soon_threadsafe(callback)
        except RuntimeError:  # the loop has already finished
            pass

    def cancel(self) -> None:
        if self._main is not None:
            self.call(self._main.cancel)

    def _run(self) -> None:
        error: BaseException | None = None
        try:
            asyncio.run(self._async_main())
        except asyncio.CancelledError:
            pass
        except BaseException as exc:  # handed to the consumer thread
            error = exc
        finally:
            self._ready.set()  # never leave the consumer waiting, even if the loop failed to start
        self.handover.put(Finished(error))

    async def _async_main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._main = asyncio.current_task()
        self.frontier.bind(self.handover)
        self._ready.set()
        await self.frontier.run()
