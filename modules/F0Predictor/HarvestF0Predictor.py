"""WORLD Harvest (pyworld): the ``harvest`` predictor."""
from modules.F0Predictor.F0Predictor import WorldF0Predictor


class HarvestF0Predictor(WorldF0Predictor):
    """``harvest``: Harvest + StoneMask (no rounding), resized and gap-filled."""

    name = "harvest"
