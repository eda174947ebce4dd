"""Benchmarks of Lepton Compiler, measured side by side in one run (see README)."""
