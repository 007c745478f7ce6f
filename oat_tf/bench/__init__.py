"""Benchmarks of oat_tf (speed is measured here, never asserted in tests)."""
