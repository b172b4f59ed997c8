"""RMVPE pitch network and its 16 kHz log-mel front end (decoding: ``modules.F0Predictor.salience``)."""
