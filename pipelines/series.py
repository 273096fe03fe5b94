"""Naming of series: one series is one dimension group of one job."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from urllib.parse import quote, unquote

ALL_SERIES = "all"

# A dimension value may hold the key's own separators ("Paris, FR", "a=b"): they are
# percent-encoded, so every key parses back to the values it was made of and two groups never
# share a key. Values without ",", "=" or "%" keep their plain form (keys already stored stay valid).
_ESCAPES = (("%", "%25"), (",", "%2C"), ("=", "%3D"))


def _escaped(text: object) -> str:
    text = str(text)
    for char, code in _ESCAPES:
        text = text.replace(char, code)
    return text


def series_key(dimensions: Sequence[str], values: Sequence[object] | Mapping[str, object]) -> str:
    """``"region=eu,host=a"`` for a dimension group, ``"all"`` when the job has no dimensions;
    ``,``, ``=`` and ``%`` inside names and values are percent-encoded."""
    if not dimensions:
        return ALL_SERIES
    if isinstance(values, Mapping):
        values = [values[d] for d in dimensions]
    return ",".join(f"{_escaped(d)}={_escaped(v)}" for d, v in zip(dimensions, values, strict=True))


def parse_series_key(key: str, dimensions: Sequence[str]) -> dict[str, str]:
    """Inverse of :func:`series_key` (values come back as strings)."""
    if not dimensions:
        return {}
    parts = {}
    for part in key.split(","):
        name, _, value = part.partition("=")
        parts[unquote(name)] = unquote(value)
    return {d: parts[d] for d in dimensions}


#: Longest slug: file systems allow 255 bytes per name, and the workspace adds ".parquet". A key
#: of 28 CJK characters is already 252 bytes once percent-encoded.
MAX_SLUG_CHARS = 200
_DIGEST_CHARS = 16


def series_slug(key: str) -> str:
    """A file-system-safe name for a series (used for directories): the percent-encoded key,
    which ``unquote`` reverses. A key whose encoding is longer than :data:`MAX_SLUG_CHARS` is cut
    and ends with ``~`` and a digest of the whole key, so it stays distinct; such a slug is exactly
    :data:`MAX_SLUG_CHARS` long, and the key must then be read from what is stored under it."""
    slug = quote(key, safe="=,-_.")
    if len(slug) <= MAX_SLUG_CHARS:
        return slug
    digest = hashlib.blake2b(key.encode(), digest_size=_DIGEST_CHARS // 2).hexdigest()
    return f"{slug[: MAX_SLUG_CHARS - _DIGEST_CHARS - 1]}~{digest}"


def slug_may_be_cut(slug: str) -> bool:
    """Whether ``unquote(slug)`` may not be the series key (see :func:`series_slug`)."""
    return len(slug) == MAX_SLUG_CHARS
