"""Benchmark helpers that are not part of the library proper.

``torch_twins`` holds PyTorch versions of handprop's preset networks and plain torch
training loops, used by :mod:`handprop.bench` to compare speeds. It imports torch (a
test/benchmark-only dependency), so nothing in handprop imports it at module level:
:func:`handprop.bench.run_bench` imports it lazily and carries on without it.
"""
