"""Material around the compiler, not part of it: the model zoo, datasets, ``lepton demo`` and
the benchmark harness. The compiler core never imports this package."""
