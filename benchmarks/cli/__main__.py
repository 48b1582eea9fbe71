"""`python -m benchmarks.cli ...`: the `vlpbench` command."""

import sys

from benchmarks.cli import main

sys.exit(main())
