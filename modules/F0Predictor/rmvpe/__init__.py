"""RMVPE pitch network, its 16 kHz log-mel front end and the local-average salience decoder."""
