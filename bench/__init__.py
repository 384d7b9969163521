"""Benchmarks of the dual-pods controller: ``bench.run`` (``make bench``) and micro benchmarks."""
