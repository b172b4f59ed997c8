"""Shallow diffusion: the Unit2Mel model and its loaders, samplers, vocoder and training (`solver`)."""
