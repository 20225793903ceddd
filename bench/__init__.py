"""Benchmarks: scripts that print figures for docs/PERFORMANCE.md (run with `make bench`)."""
