"""Benchmarks: each reports ratios against a raw baseline measured in the same run."""
