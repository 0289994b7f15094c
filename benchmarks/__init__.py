"""Benchmarks: each prints ratios and distributions measured in one run; `make bench` runs them all."""
