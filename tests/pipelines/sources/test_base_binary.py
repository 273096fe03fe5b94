"""Binary values as text: decoded when valid UTF-8, else 0x and upper-case hex."""

from __future__ import annotations

import pandas as pd
import pytest

from pipelines.sources.base import binary_as_text, bytes_as_text, parse_timestamps


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (b"eu", "eu"),
        (bytearray("zürich".encode()), "zürich"),
        (memoryview(b"\xff\xfe\x00"), "0xFFFE00"),
        (b"", ""),
        ("already text", "already text"),
        (7, 7),
        (None, None),
    ],
)
def test_bytes_as_text(value: object, text: object) -> None:
    assert bytes_as_text(value) == text


def test_binary_as_text_names_only_binary_values_and_leaves_the_frame_alone() -> None:
    frame = pd.DataFrame({"region": [b"eu", "us", None, b"\x80"], "n": [1, 2, 3, 4]})

    named = binary_as_text(frame)

    assert named["region"].fillna("-").tolist() == ["eu", "us", "-", "0x80"]
    assert frame["region"].tolist() == [b"eu", "us", None, b"\x80"]
    assert binary_as_text(named) is named  # nothing binary: no copy
    assert binary_as_text(pd.DataFrame({"id": [b"\xff", 7]}))["id"].tolist() == ["0xFF", 7]


def test_binary_timestamps_are_parsed_as_their_text() -> None:
    parsed = parse_timestamps(pd.Series([b"2024-01-01 01:00:00", b"\xff", None]))

    assert parsed.tolist()[0] == pd.Timestamp("2024-01-01 01:00", tz="UTC")
    assert parsed.isna().tolist() == [False, True, True]
