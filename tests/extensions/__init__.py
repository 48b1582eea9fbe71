"""Extensions written the way a lab would write its own: a benchmark in one file (toy_benchmark.py)."""
