"""Evaluation of detectors against labelled benchmarks (NAB: :mod:`pipelines.evaluation.nab`)."""
