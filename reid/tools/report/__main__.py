"""``python -m reid.tools.report``: the same as ``reid-report``."""

import sys

from reid.tools.report.cli import main

sys.exit(main())
