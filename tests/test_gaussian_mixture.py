"""The analytic mixture denoiser against Tweedie's formula and closed forms."""

import torch

from diffsampler.models import GaussianMixture, load_model
from diffsampler.models.builtin import toy_2d


def _mixture(shape=(2, 3, 3), k=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    means = torch.randn(k, *shape, generator=gen, dtype=torch.float64) * 2
    variances = torch.rand(k, generator=gen, dtype=torch.float64) * 0.5 + 0.05
    weights = torch.rand(k, generator=gen, dtype=torch.float64) + 0.1
    return GaussianMixture(means, variances, weights)


def _tweedie(model, x, sigma):
    """D = x + sigma^2 grad_x log p_sigma(x), by autograd."""
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model.log_density(x, sigma).sum(), x)
    return x.detach() + sigma**2 * grad


def test_denoiser_matches_tweedie_image_shaped():
    model = _mixture()
    gen = torch.Generator().manual_seed(1)
    for sigma in (0.01, 0.3, 1.0, 5.0, 40.0):
        x = model.means[:4].reshape(4, 2, 3, 3) + sigma * torch.randn(4, 2, 3, 3, generator=gen, dtype=torch.float64)
        got = model(x, sigma)
        want = _tweedie(model, x, sigma)
        # both are float64 evaluations of the same function; 1e-6 absolute as the issue asks
        assert torch.allclose(got, want, atol=1e-6, rtol=0), (sigma, (got - want).abs().max())


def test_denoiser_matches_tweedie_2d_toy():
    model = toy_2d()
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(64, 2, generator=gen, dtype=torch.float64) * 3
    for sigma in (0.05, 0.5, 3.0):
        assert torch.allclose(model(x, sigma), _tweedie(model, x, sigma), atol=1e-6, rtol=0)


def test_single_gaussian_closed_form_posterior_mean():
    mean = torch.tensor([[1.0, -2.0, 0.5]], dtype=torch.float64)
    model = GaussianMixture(mean, variances=0.25)
    x = torch.tensor([[3.0, 0.0, -1.0]], dtype=torch.float64)
    sigma = 0.7
    want = mean + 0.25 / (0.25 + sigma**2) * (x - mean)
    assert torch.allclose(model(x, sigma), want, atol=1e-14)


def test_stable_far_from_data_and_at_tiny_sigma():
    model = load_model("gmm-fmnist")
    x = torch.full((2, 1, 32, 32), 50.0)
    for sigma in (0.002, 80.0):
        out = model(x, sigma)
        assert torch.isfinite(out).all()


def test_per_sample_sigma_and_call_counter():
    model = _mixture(shape=(4,))
    x = torch.randn(3, 4, dtype=torch.float64)
    sig = torch.tensor([0.1, 1.0, 10.0], dtype=torch.float64)
    batched = model(x, sig)
    rows = torch.cat([model(x[i : i + 1], float(sig[i])) for i in range(3)])
    assert torch.allclose(batched, rows, atol=1e-12)
    assert model.calls == 4
    model.reset_calls()
    assert model.calls == 0


def test_moments_match_monte_carlo():
    model = _mixture(shape=(3,), k=3)
    mean, cov = model.moments()
    gen = torch.Generator().manual_seed(3)
    w = torch.exp(model.log_weights)
    comp = torch.multinomial(w, 200_000, replacement=True, generator=gen)
    draws = (
        model.means[comp]
        + torch.randn(200_000, 3, generator=gen, dtype=torch.float64) * model.variances[comp, None].sqrt()
    )
    # 200k draws: Monte-Carlo error of mean and covariance entries is ~ 3 / sqrt(2e5) ~ 0.007
    assert torch.allclose(draws.mean(0), mean, atol=0.03)
    assert torch.allclose(torch.cov(draws.T), cov, atol=0.05)


def test_builtin_fmnist_mixture_shape_and_range():
    model = load_model("gmm-fmnist")
    assert model.sample_shape == (1, 32, 32)
    assert model.means.shape == (500, 1024)
    assert model.means.min() >= -1 and model.means.max() <= 1
    assert len(model.content_hash()) == 64
