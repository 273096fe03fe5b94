"""Naming of series: one series is one dimension group of one job."""

from __future__ import annotations

import fnmatch
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


def key_dimensions(key: str) -> list[str]:
    """The dimension names of a series key, in its order (``[]`` for :data:`ALL_SERIES`): what a
    reader that does not know the job learns of its dimensions from a key."""
    if key == ALL_SERIES:
        return []
    return [unquote(part.partition("=")[0]) for part in key.split(",")]


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


def _glob_tokens(pattern: str) -> list[str]:
    """``pattern`` cut as :func:`fnmatch.translate` reads it: ``*``, ``?``, a whole ``[...]``
    class, or one literal character (an unclosed ``[`` is literal)."""
    tokens: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        char = pattern[i]
        i += 1
        if char == "[":
            j = i
            if j < n and pattern[j] == "!":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 1
            if j < n:
                char, i = pattern[i - 1 : j + 1], j + 1
        elif char == "*" and tokens[-1:] == ["*"]:
            continue  # ** is *
        tokens.append(char)
    return tokens


#: Stands for a dimension value in the shape of a series key: any text without "," or "=" (the
#: key escapes them inside values; "%" is left free, so a pattern of escapes is never refused).
_VALUE = None
#: Characters tried for a class that may match inside a value: beside the class's own, ones next
#: to "," and "=" (ranges ending there) and some no class names.
_VALUE_PROBES = "+-.<>aZ0_ \x01\uffff"


def pattern_may_match(pattern: str, dimensions: list[str]) -> bool:
    """Whether the glob ``pattern`` (as :func:`fnmatch.fnmatchcase` reads it) matches at least one
    key of the shape :func:`pipelines.series.series_key` gives a job of ``dimensions``: both are
    automata, walked together over (pattern token, key position) pairs. In doubt, True."""
    shape: list[str | None] = []
    if not dimensions:
        shape.extend(ALL_SERIES)
    else:
        # The escaped names as the key writes them, from a key of one-character values.
        for part in series_key(dimensions, ["v"] * len(dimensions)).split(","):
            shape.extend(part[:-1])
            shape.extend([_VALUE, ","])
        shape.pop()
    tokens = _glob_tokens(pattern)

    def in_value(token: str) -> bool:
        probes = set(token) | set(_VALUE_PROBES)
        return any(fnmatch.fnmatchcase(c, token) for c in probes - {",", "="}) or (len(token) > 1 and "-" in token)

    seen: set[tuple[int, int]] = set()
    todo = [(0, 0)]
    while todo:
        state = todo.pop()
        if state in seen:
            continue
        seen.add(state)
        i, j = state
        if i == len(tokens) and j == len(shape):
            return True
        star = i < len(tokens) and tokens[i] == "*"
        if star:
            todo.append((i + 1, j))
        if j < len(shape) and shape[j] is _VALUE:
            todo.append((i, j + 1))
        if i == len(tokens) or j == len(shape):
            continue
        # One character read by both: the pattern's token moves on (a * stays), the key's shape too
        # (a value stays, for its next character).
        token, want = tokens[i], shape[j]
        after = i if star else i + 1
        if want is _VALUE:
            if not star and in_value(token):
                todo.append((after, j))
        elif fnmatch.fnmatchcase(want, token):
            todo.append((after, j + 1))
    return False
