"""The one vocabulary and lifecycle of every Dagster resource's handle.

``get()`` is the one accessor: it returns the handle the resource holds (``StateStore``,
``VectorIndex``, an ``Embedder``, ``RerankClient``, a ``ChatModel``). The handle is a ``PrivateAttr``
built in ``setup_for_execution`` (after the credentials are checked) and released in
``teardown_after_execution``; asked for before setup, a resource raises :func:`not_set_up_error`.
Handles that are expensive to build and safe to share (the MiniLM session takes about a second to
load, the state store runs its schema check on open, the BM25 index loads from disk) come from
:func:`shared_handle`, one cache per process, because Dagster may set a resource up more than once
per step; teardown drops the resource's reference to them but leaves them open for the next step.
Handles a resource owns alone (the rerank client, the remote embedder, the chat endpoint client and
their connection pools) are closed in teardown.
"""

from collections.abc import Callable
from typing import Any, TypeVar

import dagster as dg

Handle = TypeVar("Handle")

# The per-process cache of shared handles, keyed by kind and settings.
_SHARED: dict[tuple[object, ...], Any] = {}


def shared_handle(key: tuple[object, ...], build: Callable[[], Handle]) -> Handle:
    """The process's handle for ``key``, built by ``build`` the first time it is asked for."""
    if key not in _SHARED:
        _SHARED[key] = build()
    handle: Handle = _SHARED[key]
    return handle


def not_set_up_error(resource: dg.ConfigurableResource) -> RuntimeError:
    return RuntimeError(f"{type(resource).__name__} is used before Dagster set it up for execution")
