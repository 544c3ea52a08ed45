"""Server text as an error may quote it: the key removed in every form, then shortened.

Every message built from server or transport text passes through a
:class:`~pipeline.credentials.Redactor` (raw, escaped and encoded forms of the key) in case a
server echoes the key back. Redaction comes before the cut: a cut through the key would leave
a piece no redaction finds.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from pipeline.credentials import Redactor

SERVER_TEXT_LIMIT = 500
QUOTED_VALUE_LIMIT = 100


def server_message(response: httpx.Response, redact: Redactor) -> str:
    """The error text a server put in its body, shortened and with the key removed."""
    try:
        payload = response.json()
    except ValueError:
        payload = None
    message: Any = None
    if isinstance(payload, dict):
        message = payload.get("message") or payload.get("error") or payload.get("detail")
        if isinstance(message, dict):
            message = message.get("message") or json.dumps(message)
    text = str(message) if message else response.text or f"HTTP {response.status_code} with an empty body"
    return redact(text)[:SERVER_TEXT_LIMIT]


def quoted(value: Any, redact: Redactor) -> str:
    """A piece of a server's answer as an error quotes it: redacted, then shortened.

    Each string is redacted before the piece is formatted, since formatting escapes it again.
    """

    def scrubbed(part: Any) -> Any:
        if isinstance(part, str):
            return redact(part)
        if isinstance(part, dict):
            return {scrubbed(key): scrubbed(item) for key, item in part.items()}
        if isinstance(part, list):
            return [scrubbed(item) for item in part]
        return part

    return repr(redact(str(scrubbed(value)))[:QUOTED_VALUE_LIMIT])
