"""diffsampler: benchmark fast ODE samplers of diffusion models in the EDM denoiser form.

Layers (imports flow downwards only; tests/test_architecture.py checks): ``cli`` and ``terminal`` (the only
users of rich) and ``api`` (the Python API, re-exported here; nothing below imports it) -> the engines
``bench``, ``amed``, ``ems``, ``train``, ``search`` -> ``kdiffusion``, ``sampling`` and ``artefacts`` ->
``solvers``, ``models``, ``metrics``, ``data`` -> base modules (``errors``, ``atomic``, ``torch_files``,
``config``, ``device``, ``schedules``, ``latents``, ``distributed``, ``progress``, ``images``, ``plugins``).
Plugins (entry points, docs/extending.md) add to the registries without an import from below: the AMED and
DPM-Solver-v3 artefact loaders of the engines enter that way too.
"""

from diffsampler.api import SampleResult, benchmark, load_model, sample, sigmas, solve

__version__ = "0.1.0"
__all__ = ["SampleResult", "__version__", "benchmark", "load_model", "sample", "sigmas", "solve"]
