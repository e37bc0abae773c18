"""diffsampler: benchmark fast ODE samplers of diffusion models in the EDM denoiser form.

Layers (imports flow downwards only; tests/test_architecture.py checks): ``cli`` and ``terminal`` (the only
users of rich) -> the engines ``bench``, ``amed``, ``ems``, ``train`` -> ``sampling`` and ``artefacts`` ->
``solvers``, ``models``, ``metrics``, ``data`` -> base modules (``errors``, ``atomic``, ``config``, ``device``,
``schedules``, ``latents``, ``distributed``, ``progress``, ``images``).
"""

__version__ = "0.1.0"
