"""Benchmarks run with `pytest benches --benchmark-only` (the gate does this).

Keep each benchmark short: the gate runs inside CI on a 2-core machine. Absolute times are
reported for reading; only ratios within one run are gated.
"""
