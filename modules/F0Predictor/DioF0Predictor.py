"""WORLD DIO (pyworld): the ``dio`` predictor."""
from modules.F0Predictor.F0Predictor import WorldF0Predictor


class DioF0Predictor(WorldF0Predictor):
    """``dio``: DIO + StoneMask, values rounded to 0.1 Hz, resized and gap-filled."""

    name = "dio"
    round_to_tenth = True
