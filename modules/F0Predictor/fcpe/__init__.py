"""FCPE pitch network (4.1 checkpoint layout), its mel front end and decoding."""
