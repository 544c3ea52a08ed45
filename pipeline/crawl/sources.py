"""Documentation sources: what to crawl, and the YAML file that lists them.

The file holds ``{sources: [...]}``; each entry takes the fields of :class:`Source`:

==========================  ==========================================================
field                       meaning (default)
==========================  ==========================================================
name                        partition key, ``[a-z0-9][a-z0-9_-]{2,63}`` (required)
start_urls                  list of http(s) URLs the crawl starts from (required)
sitemap_urls                extra sitemap URLs to read (none)
allowed_prefixes            URL prefixes the crawl stays within (each start URL's
                            directory: scheme, host and path up to the last ``/``)
include                     regexes searched in the normalised URL; a URL must match
                            one of them (empty: every URL)
exclude                     regexes; a URL matching any of them is out of scope (none)
max_pages                   pages scheduled per run (500)
max_depth                   link hops from a start, sitemap or known URL (5)
allow_private_hosts         allow loopback/private/link-local addresses (false)
max_concurrency_per_host    requests in flight to one host (4)
delay_seconds               minimum delay between requests to one host; a robots.txt
                            Crawl-delay raises it (0)
discover_sitemaps           read robots.txt ``Sitemap:`` lines, else ``/sitemap.xml``
                            (true)
==========================  ==========================================================
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline.crawl.urls import directory_of, normalize_url
from pipeline.inputs import display_location, read_input

NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{2,63}")


class SourceConfigError(ValueError):
    """A source definition is invalid; the message names the file, source and field."""


@dataclass(frozen=True)
class Source:
    name: str
    start_urls: tuple[str, ...]
    sitemap_urls: tuple[str, ...] = ()
    allowed_prefixes: tuple[str, ...] = ()
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    max_pages: int = 500
    max_depth: int = 5
    allow_private_hosts: bool = False
    max_concurrency_per_host: int = 4
    delay_seconds: float = 0.0
    discover_sitemaps: bool = True
    _include: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False)
    _exclude: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        """Validates every field and stores URLs in normalised form."""
        if not isinstance(self.name, str) or not NAME_PATTERN.fullmatch(self.name):
            raise _error(self.name, "name", f"must match {NAME_PATTERN.pattern}, got {self.name!r}")
        start_urls = _urls(self.name, "start_urls", self.start_urls)
        if not start_urls:
            raise _error(self.name, "start_urls", "needs at least one URL")
        prefixes = _urls(self.name, "allowed_prefixes", self.allowed_prefixes)
        normalised = {
            "start_urls": start_urls,
            "sitemap_urls": _urls(self.name, "sitemap_urls", self.sitemap_urls),
            "allowed_prefixes": prefixes or tuple(dict.fromkeys(directory_of(u) for u in start_urls)),
            "_include": _patterns(self.name, "include", self.include),
            "_exclude": _patterns(self.name, "exclude", self.exclude),
        }
        for attr, value in normalised.items():
            object.__setattr__(self, attr, value)  # the dataclass is frozen
        for attr in ("max_pages", "max_depth", "max_concurrency_per_host"):
            value = getattr(self, attr)
            minimum = 0 if attr == "max_depth" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise _error(self.name, attr, f"must be an integer >= {minimum}, got {value!r}")
        delay = self.delay_seconds
        if isinstance(delay, bool) or not isinstance(delay, int | float) or not 0 <= delay <= 3600:
            raise _error(self.name, "delay_seconds", f"must be a number of seconds in [0, 3600], got {delay!r}")
        for attr in ("allow_private_hosts", "discover_sitemaps"):
            if not isinstance(getattr(self, attr), bool):
                raise _error(self.name, attr, f"must be true or false, got {getattr(self, attr)!r}")
        for url in start_urls:
            if not self.in_scope(url):
                raise _error(
                    self.name,
                    "start_urls",
                    f"{url} is outside the source's own scope (allowed_prefixes/include/exclude)",
                )

    def in_scope(self, url: str) -> bool:
        """True when the normalised ``url`` is under an allowed prefix, matches an include
        pattern (if any) and no exclude pattern."""
        return (
            url.startswith(self.allowed_prefixes)
            and (not self._include or any(p.search(url) for p in self._include))
            and not any(p.search(url) for p in self._exclude)
        )


_FIELDS = {f.name: f for f in dataclasses.fields(Source) if f.init}


def load_sources(location: str | Path) -> list[Source]:
    """Sources listed in a YAML file at a path or http(s) URL; raises :class:`SourceConfigError`
    naming the file, the source and the field of the first problem found."""
    path = display_location(location)
    try:
        document = yaml.safe_load(read_input(location, setting="PIPELINE_SOURCES"))
    except (OSError, yaml.YAMLError) as exc:
        raise SourceConfigError(f"{path}: cannot read sources: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("sources"), list):
        raise SourceConfigError(f"{path}: expected a mapping with a 'sources' list")
    sources: list[Source] = []
    names: set[str] = set()
    for index, entry in enumerate(document["sources"]):
        where = f"{path} (entry {index + 1})"
        try:
            source = _source_from_mapping(entry)
        except SourceConfigError as exc:
            raise SourceConfigError(f"{where}: {exc}") from None
        if source.name in names:
            raise SourceConfigError(f"{where}: {_error(source.name, 'name', 'duplicate source name')}")
        names.add(source.name)
        sources.append(source)
    return sources


def _source_from_mapping(entry: Any) -> Source:
    if not isinstance(entry, dict):
        raise SourceConfigError(f"expected a mapping of source fields, got {type(entry).__name__}")
    label = entry.get("name")
    unknown = sorted(set(entry) - set(_FIELDS), key=str)
    if unknown:
        raise _error(label, str(unknown[0]), f"unknown field; known fields: {', '.join(_FIELDS)}")
    for name, spec in _FIELDS.items():
        if spec.default is dataclasses.MISSING and name not in entry:
            raise _error(label, name, "required")
    values = dict(entry)
    for name, value in entry.items():
        if _FIELDS[name].type.startswith("tuple"):
            if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
                raise _error(label, name, f"must be a list of strings, got {value!r}")
            values[name] = tuple(value)
    return Source(**values)


def _error(source: object, field_name: str, message: str) -> SourceConfigError:
    return SourceConfigError(f"source {source!r}: field {field_name!r}: {message}")


def _urls(source: str, field_name: str, values: Any) -> tuple[str, ...]:
    if isinstance(values, str) or not isinstance(values, tuple | list):
        raise _error(source, field_name, f"must be a list of URLs, got {values!r}")
    result = []
    for value in values:
        url = normalize_url(value) if isinstance(value, str) else None
        if url is None:
            raise _error(source, field_name, f"{value!r} is not an absolute http(s) URL")
        result.append(url)
    return tuple(dict.fromkeys(result))


def _patterns(source: str, field_name: str, values: Any) -> tuple[re.Pattern[str], ...]:
    if isinstance(values, str) or not isinstance(values, tuple | list):
        raise _error(source, field_name, f"must be a list of regular expressions, got {values!r}")
    patterns = []
    for value in values:
        try:
            patterns.append(re.compile(value))
        except (re.error, TypeError) as exc:
            raise _error(source, field_name, f"bad regular expression {value!r}: {exc}") from None
    return tuple(patterns)
