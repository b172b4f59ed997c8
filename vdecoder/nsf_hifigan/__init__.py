"""Stand-alone NSF-HiFiGAN vocoder (OpenVPI release layout): enhancer and shallow-diffusion vocoder."""
