"""The sequential test of :mod:`pipelines.detectors.sequential`, public and used by level_shift."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from pipelines.detectors.sequential import sprt_bounds, sprt_evidence

SIZES = [1.0, 3.0, 1e3, 1e8, 1e19, 1e20, 1e40, 1e154, 1e155, 1e200, 1.7e308, np.inf]


@pytest.mark.parametrize("variance_ratio", [None, 4.0])
def test_the_evidence_of_a_huge_residual_is_finite_and_grows_with_it(variance_ratio) -> None:
    # From 1e155 the variance test's square overflowed: the spike's evidence was inf and the rows
    # of its window NaN, with an overflow RuntimeWarning.
    calm = np.random.default_rng(1).normal(size=(60, 1))
    at_spike = []
    for sign in (1.0, -1.0):
        for size in SIZES:
            z = calm.copy()
            z[10, 0] = sign * size
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                evidence = sprt_evidence(z, 12, 1.0, variance_ratio)
                up, down = sprt_bounds(z, 12, 1.0, np.array([5.0]))
            assert np.isfinite(evidence).all() and np.isfinite(up).all() and np.isfinite(down).all()
            at_spike.append(evidence[10, 0])
        assert np.all(np.diff(at_spike) >= 0) and at_spike[-1] > 1e3
        at_spike = []


@pytest.mark.parametrize("size", [1e8, 1e20, 1e200])
@pytest.mark.parametrize("variance_ratio", [None, 4.0])
def test_a_huge_residual_leaves_the_rows_after_its_window_alone(size: float, variance_ratio) -> None:
    # A row's evidence is a difference of cumulative sums: a residual of 1e20 stayed in every later
    # one and left the evidence of rows hundreds of rows on off by 3, for good.
    calm = np.random.default_rng(2).normal(size=(300, 2))
    z = calm.copy()
    z[10, 0] = size
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        evidence = sprt_evidence(z, 12, 1.0, variance_ratio)
    reference = sprt_evidence(calm, 12, 1.0, variance_ratio)
    np.testing.assert_allclose(evidence[22:], reference[22:], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(evidence[:, 1], reference[:, 1])
