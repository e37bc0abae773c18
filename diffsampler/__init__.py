"""diffsampler: benchmark fast ODE samplers of diffusion models in the EDM denoiser form."""

__version__ = "0.1.0"
