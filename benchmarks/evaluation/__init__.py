"""Evaluations: the model produces scores, `metrics` turns them into numbers."""
