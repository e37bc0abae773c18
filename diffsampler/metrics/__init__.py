"""Metric computations: Frechet distances (FID with its Inception network and reference statistics, and in pixel
space), errors against reference ODE solutions. The benchmark's metric registry is
``diffsampler.bench.metric_registry``."""
