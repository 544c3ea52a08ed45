"""Decoding HTML bytes whose declared charset may be wrong.

Order of evidence:

1. a byte-order mark (certain);
2. bytes that are valid UTF-8 (and contain no NUL, which would point to UTF-16) are
   UTF-8 whatever is declared: legacy single-byte text almost never forms valid UTF-8
   multi-byte sequences, while a single-byte charset such as ISO-8859-1 decodes *any*
   bytes, so a declaration like ``<meta charset=iso-8859-1>`` on a UTF-8 page cannot be
   caught by a strict decode and would silently produce mojibake;
3. the ``<meta charset>`` / ``http-equiv`` declaration in the first 2 KB, then the
   HTTP header charset, each verified by a strict decode; per the WHATWG encoding
   standard ``iso-8859-1``/``latin1``/``ascii`` labels mean windows-1252. Only labels
   of the text encodings browsers honour count: Python also knows ``base64``,
   ``rot13``, ``hex``, ``zlib``, ``unicode_escape`` or ``utf-7`` by name, which are not
   charsets of a web page (decoding with them raises or yields other text), so they,
   like labels nobody knows, are no evidence;
4. charset-normalizer detection, preferring windows-1252 when it is among the
   plausible candidates (detection on short Western text often picks a neighbour such
   as cp1257, turning "naïve" into "naļve").
"""

from __future__ import annotations

import codecs
import re

from charset_normalizer import from_bytes

_BOMS = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([a-zA-Z0-9._:-]+)""", re.IGNORECASE)
_HEADER_CHARSET = re.compile(r"""charset\s*=\s*["']?\s*([a-zA-Z0-9._:-]+)""", re.IGNORECASE)
_WINDOWS_1252_ALIASES = {"latin-1", "latin1", "iso-8859-1", "iso8859-1", "l1", "us-ascii", "ascii", "iso_8859-1"}
# The encodings of the WHATWG Encoding Standard, and the Python codecs its legacy
# encodings extend, as Python codec names.
_WEB_CHARSETS = frozenset(
    codecs.lookup(name).name
    for name in (
        "utf-8",
        "utf-16",
        "utf-16-be",
        "utf-16-le",
        "cp866",
        "koi8-r",
        "koi8-u",
        "mac-roman",
        "mac-cyrillic",
        "cp874",
        "tis-620",
        *(f"iso8859-{part}" for part in (2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16)),
        *(f"cp{page}" for page in range(1250, 1259)),
        "gb2312",
        "gbk",
        "gb18030",
        "big5",
        "big5hkscs",
        "euc_jp",
        "iso2022_jp",
        "shift_jis",
        "cp932",
        "euc_kr",
        "cp949",
    )
)
# How much more "chaos" (charset-normalizer's mess ratio) windows-1252 may show than
# the best candidate and still be preferred.
_CP1252_MARGIN = 0.1


class DecodeError(ValueError):
    """The bytes could not be decoded as text in any plausible charset."""


def decode_html(body: bytes, content_type: str | None = None) -> tuple[str, str]:
    """``(text, charset used)`` for an HTML body; ``content_type`` is the HTTP header."""
    for bom, charset in _BOMS:
        if body.startswith(bom):
            return body.decode(charset), charset
    if b"\x00" not in body:
        try:
            return body.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            pass
    for charset in declared_charsets(body, content_type):
        try:
            return body.decode(charset), charset
        except UnicodeDecodeError:
            continue
    return _detect(body)


def declared_charsets(body: bytes, content_type: str | None) -> list[str]:
    """Python codec names declared by the page's meta tag, then by the HTTP header."""
    labels: list[str] = []
    meta = _META_CHARSET.search(body[:2048])
    if meta:
        labels.append(meta.group(1).decode("ascii"))
    header = _HEADER_CHARSET.search(content_type or "")
    if header:
        labels.append(header.group(1))
    charsets: list[str] = []
    for label in labels:
        charset = _codec(label)
        if charset and charset not in charsets:
            charsets.append(charset)
    return charsets


def _codec(label: str) -> str | None:
    label = label.strip().lower()
    if label in _WINDOWS_1252_ALIASES:
        return "cp1252"
    try:
        charset = codecs.lookup(label).name
    except LookupError:
        return None
    return charset if charset in _WEB_CHARSETS else None


def _detect(body: bytes) -> tuple[str, str]:
    matches = list(from_bytes(body))
    if not matches:
        raise DecodeError("no charset decodes these bytes as text")
    best = matches[0]
    for match in matches:
        if match.encoding == "cp1252" and match.chaos <= best.chaos + _CP1252_MARGIN:
            best = match
            break
    return str(best), best.encoding
