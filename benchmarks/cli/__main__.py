"""`python -m vlpbench.benchmarks.cli ...`: the `vlpbench` command."""

import sys

from vlpbench.benchmarks.cli import main

sys.exit(main())
