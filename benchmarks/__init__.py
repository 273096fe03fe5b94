"""Benchmarks of the platform: throughput, and detection quality on NAB (see docs/BENCHMARKS.md)."""
