"""Benchmarks: `python -m bench.<name>`; each prints ratios and writes bench/results/<name>.md."""
