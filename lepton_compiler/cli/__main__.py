"""``python -m lepton_compiler.cli``: the ``lepton`` command without the console script."""

import sys

from lepton_compiler.cli import main

sys.exit(main())
