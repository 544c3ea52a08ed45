"""Secrets on their way out: checked before anything is sent, and redacted in every written form.

A key pasted with a trailing newline is the common accident: the HTTP layer refuses the header
and quotes its repr (``b'Bearer abc\\n'``), which a search for the raw key never finds. So every
key, token and URL that carries a credential is checked with :func:`check_secret` before the
first request, and :class:`Redactor` removes the raw value and the forms it takes once quoted,
escaped or encoded. The HTTP libraries' own debug logs quote a refused header too, so
:data:`http_log_redaction` redacts their records with every live redactor registered on it.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import urllib.parse
import weakref

from pipeline.settings import SettingError

REDACTED = "[REDACTED]"
# Shorter fragments (what is left of "\n" once stripped, say) would redact ordinary words.
_MIN_FORM_LENGTH = 3
_CHARACTER_NAMES = {
    "\n": "a line feed (\\n)",
    "\r": "a carriage return (\\r)",
    "\t": "a tab (\\t)",
    " ": "a space",
}


def check_secret(name: str, value: str) -> str:
    """``value`` when it holds printable ASCII only, without spaces; else a SettingError naming ``name``.

    The message says which kind of character is wrong and where, never the value: HTTP header
    values and URLs cannot carry whitespace, control or non-ASCII characters, and a library
    refusing one would quote the whole secret.
    """
    for position, character in enumerate(value):
        if "!" <= character <= "~":
            continue
        if character in _CHARACTER_NAMES:
            what = _CHARACTER_NAMES[character]
        elif ord(character) < 0x20 or ord(character) == 0x7F:
            what = f"a control character (U+{ord(character):04X})"
        else:
            what = "a non-ASCII character"
        if position == len(value) - 1:
            where = "at its end"
        elif position == 0:
            where = "at its start"
        else:
            where = f"at character {position + 1}"
        raise SettingError(
            f"{name} contains {what} {where}, which no HTTP header or URL can carry: set {name} again "
            "without it (copying a value often adds a trailing newline)"
        )
    return value


def secret_forms(secret: str) -> set[str]:
    """The texts a secret may show up as in a message: raw, stripped, repr, JSON, URL and base64 forms."""
    forms: set[str] = set()
    for value in {secret, secret.strip()}:
        encoded = value.encode("utf-8")
        forms |= {
            value,
            repr(value)[1:-1],
            repr(encoded)[2:-1],  # how h11 and httpx quote a header they refuse
            json.dumps(value)[1:-1],
            json.dumps(value, ensure_ascii=False)[1:-1],
            urllib.parse.quote(value, safe=""),
            urllib.parse.quote_plus(value, safe=""),
            base64.b64encode(encoded).decode("ascii").rstrip("="),
            base64.urlsafe_b64encode(encoded).decode("ascii").rstrip("="),
        }
    return {form for form in forms if len(form) >= _MIN_FORM_LENGTH}


class Redactor:
    """Replaces every form of the given secrets (see :func:`secret_forms`) in a text with ``[REDACTED]``."""

    def __init__(self, *secrets: str | None) -> None:
        forms: set[str] = set()
        for secret in secrets:
            if secret:
                forms |= secret_forms(secret)
        # Longest first, so a form that contains another is replaced whole.
        self._forms = sorted(forms, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for form in self._forms:
            text = text.replace(form, REDACTED)
        return text

    def __repr__(self) -> str:
        return f"Redactor({len(self._forms)} forms)"


class RedactingLogFilter(logging.Filter):
    """Rewrites each record through every registered :class:`Redactor`.

    Held weakly, so one lives as long as its owner."""

    def __init__(self) -> None:
        super().__init__()
        self._redactors: weakref.WeakSet[Redactor] = weakref.WeakSet()
        self._lock = threading.Lock()

    def register(self, redactor: Redactor) -> None:
        with self._lock:
            self._redactors.add(redactor)

    def filter(self, record: logging.LogRecord) -> bool:
        with self._lock:
            redactors = list(self._redactors)
        if redactors:
            message = record.getMessage()
            for redact in redactors:
                message = redact(message)
            record.msg, record.args = message, None
        return True


# Logger filters apply to records of that exact logger, so each module that logs is named.
_HTTP_LOGGERS = ("httpx", "httpcore.connection", "httpcore.http11", "httpcore.http2", "httpcore.proxy")
http_log_redaction = RedactingLogFilter()
for _name in _HTTP_LOGGERS:
    logging.getLogger(_name).addFilter(http_log_redaction)
