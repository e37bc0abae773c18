"""diffsampler: benchmark fast ODE samplers of diffusion models in the EDM denoiser form.

Layers (imports flow downwards only; tests/test_architecture.py checks): ``cli`` and ``terminal`` (the only
users of rich) -> the engines ``bench``, ``amed``, ``ems``, ``train``, ``search`` -> ``kdiffusion``, ``sampling``
and ``artefacts`` -> ``solvers``, ``models``, ``metrics``, ``data`` -> base modules (``errors``, ``atomic``,
``torch_files``, ``config``, ``device``, ``schedules``, ``latents``, ``distributed``, ``progress``, ``images``,
``plugins``).
Plugins (entry points, docs/extending.md) add to the registries without an import from below: the AMED and
DPM-Solver-v3 artefact loaders of the engines enter that way too.
"""

__version__ = "0.1.0"
