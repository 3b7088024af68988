"""Benchmarks against the live broker of ``scripts/kafka``; not part of the test run."""
