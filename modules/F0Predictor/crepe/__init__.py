"""CREPE pitch network, torchcrepe-compatible decoding and the 4.1 crepe filters."""
