"""AMED (arXiv 2312.00094): a tiny predictor of the intermediate time and scales of each solver step,
distilled from a finer teacher solve. The predictor and its checkpoints live here; the step math is
in ``diffsampler.solvers.amed`` and the trainer in ``diffsampler.amed.train`` (imported on demand).
"""
