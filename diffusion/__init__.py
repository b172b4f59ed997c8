"""Shallow diffusion (so-vits-svc 4.1 `diffusion/`): Unit2Mel, its Gaussian diffusion and samplers.

- `diffusion.unit2mel`: `Unit2Mel`, `load_model_vocoder`, `load_diffusion_model`.
- `diffusion.diffusion`: `GaussianDiffusion` (schedule, training loss, shallow/full sampling).
- `diffusion.wavenet`: the denoiser network.
- `diffusion.samplers`: ddpm, ddim, pndm, dpm-solver(++), unipc, keyed by `infer.method`.
- `diffusion.vocoder`: `Vocoder` (NSF-HiFiGAN mel extraction and synthesis).

Nothing is imported here, so importing one part does not load the others.
"""
