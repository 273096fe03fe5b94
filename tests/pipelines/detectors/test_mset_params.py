from __future__ import annotations

import numpy as np
import pytest

from pipelines.detectors.mset import MSETDetector
from pipelines.errors import ConfigError
from tests.pipelines.detectors.test_mset import plant


@pytest.mark.parametrize("bandwidth", [0, -1.0, float("nan"), np.float64("nan"), float("inf"), -float("inf"), 1e200, 10**400, 1e6 * 1.01])
def test_a_bandwidth_out_of_range_is_refused_naming_the_range(bandwidth) -> None:
    # 1e200 was taken (a flat kernel: every estimate the memory's mean, one signal no longer
    # estimated from the others), and nan or inf were refused without saying which numbers do.
    detector = MSETDetector(bandwidth=1.0).set_params(bandwidth=bandwidth)  # set_params cannot skip the check
    with pytest.raises(ConfigError) as raised:
        detector.fit(plant(200, seed=1))
    message = str(raised.value)
    assert "'bandwidth'" in message and f"(got {bandwidth!r})" in message
    assert "positive number up to 1e+06" in message and "'auto'" in message


@pytest.mark.parametrize("bandwidth", [1e-300, 0.5, 1e6, np.float32(2.0)])
def test_a_bandwidth_in_range_is_taken(bandwidth) -> None:
    assert MSETDetector(bandwidth=bandwidth).fit(plant(200, seed=1)).bandwidth_ == pytest.approx(float(bandwidth))


def test_a_job_file_with_a_bandwidth_out_of_range_is_refused_when_it_is_loaded() -> None:
    # The range is MSETParams': a job file is refused when it loads, not when its first training runs.
    from pipelines.config import parse_job

    job = {
        "name": "plant", "source": {"kind": "file", "path": "x.csv"}, "timestamp": "ts", "frequency": "1h",
        "features": ["a", "b"], "model": {"kind": "mset", "params": {"bandwidth": 1e200}},
    }  # fmt: skip
    with pytest.raises(ConfigError, match=r"model: invalid parameters for model .mset.: params.bandwidth: must be .auto. or a positive number up to 1e\+06.*\(got 1e\+200\)"):
        parse_job(job)
