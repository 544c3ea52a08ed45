"""A clock tests move by hand, for code that paces and backs off."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator
from typing import Any, Protocol, TypeVar


class _Closable(Protocol):
    def close(self) -> None: ...


ClientT = TypeVar("ClientT", bound=_Closable)


class FakeClock:
    """A monotonic clock that only moves when something sleeps on it; records every sleep."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self.now += seconds


def clients_on_clock(
    build: Callable[..., ClientT], clock: FakeClock, **defaults: Any
) -> Iterator[Callable[..., ClientT]]:
    """A fixture's body: a factory of clients ``build(**defaults, **overrides)`` that sleep on
    ``clock`` (waits are recorded, not waited) with a seeded jitter; every client is closed after."""
    made: list[ClientT] = []

    def make(**overrides: Any) -> ClientT:
        options = {"timeout": 5.0, "sleep": clock.sleep, "clock": clock, "rng": random.Random(1), **defaults}
        client = build(**{**options, **overrides})
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()
