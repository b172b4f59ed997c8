"""Shallow diffusion: `unit2mel.Unit2Mel` (loaders too), `diffusion.GaussianDiffusion`, the `wavenet`
denoiser, `samplers` keyed by `infer.method`, the NSF-HiFiGAN `vocoder`, and training (`solver`)."""
