"""``anomaly-pipelines detect`` without ``--timestamp`` names rows by their numbers in the file,
never by the time column it numbers them with inside."""

from __future__ import annotations

import pytest

from pipelines.cli import main


@pytest.mark.parametrize("verbose", [[], ["-v"]], ids=["quiet", "verbose"])
def test_detect_without_timestamp_names_bad_rows_by_number(tmp_path, capsys, verbose):
    train, input = tmp_path / "train.csv", tmp_path / "input.csv"
    train.write_text("host,cpu\n" + "".join(f"{host},{i % 7}\n" for i in range(60) for host in "ab"))
    input.write_text("host,cpu\na,1\nb,2\na,slow\nb,4\na,5\n")

    code = main(
        ["detect", "--train", str(train), "--input", str(input), "--features", "cpu", "--dimensions", "host",
         "--model", "iforest", "--output", str(tmp_path / "out.parquet"), *verbose]
    )

    err = capsys.readouterr().err
    assert code == 2
    # The error said "(__row_time__=1970-01-01T00:00:03+00:00, host=a)"; -v's lines counted its checks.
    assert "__row_time__" not in err and "1970-01-01" not in err, err
    assert err.rstrip().endswith(
        'sample values ["slow"], at rows [3] of the --input file, counting its first data row as 1 (host=a)'
    )
    assert not (tmp_path / "out.parquet").exists()
