"""The local stand-ins' error answers: JSON ``{"error", "message"}`` with a 4xx status."""

from __future__ import annotations

import math
from collections.abc import Mapping

from starlette.responses import JSONResponse


class Rejection(Exception):
    """An error response (4xx) raised from deep in validation and turned into JSON in one place."""

    def __init__(self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.headers = headers

    def response(self) -> JSONResponse:
        return JSONResponse({"error": self.code, "message": str(self)}, status_code=self.status, headers=self.headers)


def rate_limited(
    message: str, retry_after: float, *, omit_retry_after: bool, headers: Mapping[str, str] | None = None
) -> Rejection:
    """A 429, with ``Retry-After`` in whole seconds (at least 1) unless the service plays one that omits it."""
    retry = {} if omit_retry_after else {"Retry-After": str(max(1, math.ceil(retry_after)))}
    return Rejection(429, "rate_limited", message, {**(headers or {}), **retry})
