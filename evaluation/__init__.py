"""Objective evaluation (evaluate.py): figures for conversions and a ranking of checkpoints."""
