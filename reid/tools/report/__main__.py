"""``python -m reid.tools.report``: the same as ``reid-report``."""

import sys

from reid.tools.report.cli import main

if __name__ == "__main__":  # importing the module (a package walk, the docs) must not run the tool
    sys.exit(main())
