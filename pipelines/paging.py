"""One page of a job's series, in key order: how the model listings (``GET .../model``, the
dashboard's models page, ``anomaly-pipelines models``) read a job of thousands of series."""

from __future__ import annotations

from typing import Any

#: Series listed at once. Each listed series costs reads of its champion, version and tune record:
#: a job of 10,000 trained series took some 8 s on a local disk to list whole (100,000 exist).
PAGE_SERIES = 200


def page_of(keys: list[str], page: int) -> tuple[list[str], dict[str, Any]]:
    """The keys on ``page`` (from 1) and where it is: ``page``, ``pages`` (at least 1), ``total``,
    ``first`` (0-based index of its first key), ``page_size``, ``next_page`` (None on the last).
    A page past the end holds no keys; its answer still says how many pages there are."""
    first = (page - 1) * PAGE_SERIES
    pages = max(1, -(-len(keys) // PAGE_SERIES))
    where = {"page": page, "pages": pages, "total": len(keys), "first": first, "page_size": PAGE_SERIES}
    return keys[first : first + PAGE_SERIES], {**where, "next_page": page + 1 if page < pages else None}
