"""FCPE pitch networks (the 4.1 checkpoint and torchfcpe's bundled model) and their mel front end."""
