"""Every benchmark model with every system in one run: ``python -m benchmarks.run [--quick]``.

See ``lepton_compiler/bench/runner.py`` (also ``lepton bench``) for the options and figures.
"""

import sys

from lepton_compiler.examples.bench.runner import main

if __name__ == "__main__":
    sys.exit(main())
