"""Input files that may live on disk or behind an http(s) URL (``PIPELINE_SOURCES``, ``PIPELINE_QUERIES``).

On Heroku the slug is read-only and redeploying to change a list of questions is slow,
so both settings may point at a raw file instead (a GitHub raw URL, an S3 presigned
URL, an internal wiki export). The download is bounded: a connect and a read timeout,
a size cap checked against ``Content-Length`` and again while streaming, and
redirects are followed but counted.

A URL may carry a credential (``?token=``, ``user:password@``): :func:`display_location`
is what goes into messages, metadata and logs, never the URL itself.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit, urlunsplit

import httpx

MAX_INPUT_BYTES = 5 * 1024 * 1024
INPUT_TIMEOUT = httpx.Timeout(20.0, connect=5.0)
MAX_REDIRECTS = 5


class InputUnavailable(OSError):
    """The file or URL could not be read (missing, unreachable, HTTP error, too large, not UTF-8)."""


def is_url(location: str | Path) -> bool:
    return isinstance(location, str) and location.lower().startswith(("http://", "https://"))


def display_location(location: str | Path) -> str:
    """The location safe to show: a URL loses its user info, query string and fragment."""
    if not is_url(location):
        return str(location)
    parts = urlsplit(str(location))
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def location_suffix(location: str | Path) -> str:
    """The file extension (``.jsonl``, ``.yaml``) of a path or of a URL's path, lower-cased."""
    path = urlsplit(str(location)).path if is_url(location) else str(location)
    return PurePosixPath(path).suffix.lower()


def read_input(
    location: str | Path, *, setting: str, max_bytes: int = MAX_INPUT_BYTES, timeout: httpx.Timeout = INPUT_TIMEOUT
) -> str:
    """The UTF-8 text at a local path or an http(s) URL; raises :class:`InputUnavailable` naming ``setting``."""
    if is_url(location):
        return _download(str(location), setting=setting, max_bytes=max_bytes, timeout=timeout)
    path = Path(location)
    try:
        size = path.stat().st_size
        data = path.read_bytes() if size <= max_bytes else None
    except FileNotFoundError:
        raise InputUnavailable(f"{setting}: {path} does not exist") from None
    except OSError as error:
        raise InputUnavailable(f"{setting}: cannot read {path}: {error.strerror or error}") from None
    if data is None:
        raise InputUnavailable(f"{setting}: {path} is {size:,} bytes, more than the {max_bytes:,} allowed")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InputUnavailable(f"{setting}: {path} is not UTF-8 text ({where_undecodable(data, error)})") from None


def where_undecodable(data: bytes, error: UnicodeDecodeError) -> str:
    """Why and where ``data`` is no UTF-8, in words a person can find in an editor: the line and byte."""
    line = data.count(b"\n", 0, error.start) + 1
    return f"{error.reason} at line {line}, byte {error.start}"


def _download(url: str, *, setting: str, max_bytes: int, timeout: httpx.Timeout) -> str:
    shown = display_location(url)
    try:
        with (
            httpx.Client(timeout=timeout, follow_redirects=True, max_redirects=MAX_REDIRECTS) as client,
            client.stream("GET", url, headers={"Accept": "text/plain, application/yaml, */*"}) as response,
        ):
            if response.status_code != 200:
                raise InputUnavailable(f"{setting}: GET {shown} answered HTTP {response.status_code}")
            declared = response.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise InputUnavailable(
                    f"{setting}: {shown} is {int(declared):,} bytes, more than the {max_bytes:,} allowed"
                )
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > max_bytes:
                    raise InputUnavailable(f"{setting}: {shown} is larger than the {max_bytes:,} bytes allowed")
            encoding = response.charset_encoding or "utf-8"
    except httpx.TooManyRedirects:
        raise InputUnavailable(f"{setting}: {shown} redirects more than {MAX_REDIRECTS} times") from None
    except httpx.TimeoutException as error:
        raise InputUnavailable(f"{setting}: no answer from {shown} in time ({type(error).__name__})") from None
    except httpx.HTTPError as error:
        # httpx messages may repeat the full URL; only the class name is safe to show.
        raise InputUnavailable(f"{setting}: cannot download {shown} ({type(error).__name__})") from None
    try:
        return bytes(body).decode(encoding)
    except (LookupError, UnicodeDecodeError):
        raise InputUnavailable(f"{setting}: {shown} is not {encoding} text") from None
