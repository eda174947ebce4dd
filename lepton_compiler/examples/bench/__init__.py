"""The benchmark suite behind ``python -m benchmarks.run`` and ``lepton bench``."""
