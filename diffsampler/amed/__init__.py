"""AMED (arXiv 2312.00094): a tiny predictor of the intermediate time and scales of each solver step,
distilled from a finer teacher solve. The predictor network (``predictor``), its checkpoints with their
loader and prepare hooks (``checkpoint``), the distillation (``train``) and the cache of predictors trained on
demand (``cache``) live here; the step math is in ``diffsampler.solvers.amed``.
"""
