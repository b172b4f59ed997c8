"""Objective evaluation of conversions and checkpoints (evaluate.py): pitch, speaker, loudness, content and resynthesis figures."""
