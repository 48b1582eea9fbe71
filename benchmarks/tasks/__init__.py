"""The built-in benchmarks, one module each; importing this package registers them in this order, the order a
suite that names no benchmarks runs them in."""

from vlpbench.benchmarks.tasks import zeroshot  # noqa: F401  (each import registers its benchmark)
from vlpbench.benchmarks.tasks import finetuned  # noqa: F401,I001
from vlpbench.benchmarks.tasks import video  # noqa: F401,I001
from vlpbench.benchmarks.tasks import products  # noqa: F401,I001
from vlpbench.benchmarks.tasks import latency  # noqa: F401,I001
