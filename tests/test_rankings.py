"""Intervals, paired ties, the recommendation and PRDC (issue 36, points 2, 3 and 6)."""

import csv
import json

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from diffsampler.bench.recommend import primary_metric, recommend
from diffsampler.bench.report import mark_column
from diffsampler.bench.table import Entry, MetricTable, Status
from diffsampler.cli import app
from diffsampler.errors import UserError
from diffsampler.metrics.bootstrap import (
    RESAMPLES,
    frechet_score,
    kid_score,
    resample_counts,
    rmse_score,
    tied,
)
from diffsampler.metrics.fid import kernel_inception_distance
from diffsampler.metrics.frechet import frechet_distance, mean_and_covariance
from diffsampler.metrics.prdc import prdc_balls

runner = CliRunner()


def brute_force_prdc(real, fake, k):
    """PRDC by loops over points (arXiv 2002.09797 eqs. 1-4), written apart from the implementation."""

    def kth(points, i):
        return sorted(float(np.linalg.norm(points[i] - p)) for j, p in enumerate(points) if j != i)[k - 1]

    r_real = [kth(real, i) for i in range(len(real))]
    r_fake = [kth(fake, j) for j in range(len(fake))]

    def d(i, j):
        return float(np.linalg.norm(real[i] - fake[j]))

    n, m = len(real), len(fake)
    precision = sum(any(d(i, j) < r_real[i] for i in range(n)) for j in range(m)) / m
    recall = sum(any(d(i, j) < r_fake[j] for j in range(m)) for i in range(n)) / n
    density = sum(d(i, j) < r_real[i] for i in range(n) for j in range(m)) / (k * m)
    coverage = sum(min(d(i, j) for j in range(m)) < r_real[i] for i in range(n)) / n
    return {"precision": precision, "recall": recall, "density": density, "coverage": coverage}


def test_prdc_on_a_hand_computed_line():
    # Reals at 0, 1, 2, 3 and 10 on a line, k = 1: radii 1, 1, 1, 1, 7. Fakes at 0.5 (in the balls of 0 and 1),
    # 2.9 (in those of 2 and 3), 20 (in none) and 9 (in the ball of 10): precision 3/4, density (2+2+0+1)/4.
    # Fake radii (k = 1): 0.5 -> 2.4, 2.9 -> 2.4, 20 -> 11, 9 -> 6.1. Every real lies within one of them: recall 1.
    # Coverage: the nearest fake of 0, 1, 2, 3, 10 is at 0.5, 0.5, 0.9, 0.1, 1: all below the radius, so 1.
    real = np.array([[0.0], [1.0], [2.0], [3.0], [10.0]])
    fake = np.array([[0.5], [2.9], [20.0], [9.0]])
    values = prdc_balls(real, fake, k=1).values()
    assert values == pytest.approx({"precision": 0.75, "recall": 1.0, "density": 1.25, "coverage": 1.0}, abs=1e-12)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_prdc_equals_a_brute_force_count_on_random_points(k):
    rng = np.random.default_rng(k)
    real, fake = rng.normal(size=(30, 3)), rng.normal(size=(25, 3)) * 1.4 + 0.3
    # Counting the same inequalities: equal up to the rounding of distances (none sit on a radius).
    assert prdc_balls(real, fake, k).values() == pytest.approx(brute_force_prdc(real, fake, k), abs=1e-12)


def test_prdc_replicates_without_resampling_are_the_values():
    rng = np.random.default_rng(0)
    balls = prdc_balls(rng.normal(size=(40, 2)), rng.normal(size=(30, 2)), 5)
    reps = balls.replicates(np.ones((2, 30)))  # every fake drawn once: the replicate is the statistic itself
    for name, value in balls.values().items():
        assert reps[name] == pytest.approx([value, value], abs=1e-12)


def test_shared_resampling_is_deterministic_and_draws_n_per_replicate():
    a, b = resample_counts(50, 20, seed=3), resample_counts(50, 20, seed=3)
    assert np.array_equal(a, b) and not np.array_equal(a, resample_counts(50, 20, seed=4))
    assert (a.sum(axis=1) == 50).all()


def test_frechet_replicates_without_resampling_equal_scipy():
    rng = np.random.default_rng(1)
    x, ref = rng.normal(size=(200, 6)), rng.normal(size=(300, 6)) * 1.3
    mu, sigma = mean_and_covariance(ref)
    from diffsampler.metrics.bootstrap import frechet_replicates

    reps = frechet_replicates(x, mu, sigma, np.ones((1, 200)))
    # Eigenvalues of R S R against scipy's sqrtm of S1 S2: the same number up to float64 rounding.
    assert reps[0] == pytest.approx(frechet_distance(*mean_and_covariance(x), mu, sigma), rel=1e-9)


def test_frechet_interval_covers_the_known_distance_about_95_percent():
    # Samples from N(0, A) scored against the exact N(m, B): the true squared Frechet distance is known.
    # 100 seeds; a 95% interval covers in about 95 of them: the binomial sd is 2.2, so [85, 99] is a wide band
    # that a biased interval misses (the plain percentile one covers 78 of 100 here: the estimate is biased up).
    dim, n = 6, 300
    rng = np.random.default_rng(11)
    a = rng.normal(size=(dim, dim)) / np.sqrt(dim)
    cov_a, cov_b = a @ a.T + 0.5 * np.eye(dim), np.diag(np.linspace(0.5, 2.0, dim))
    mean_b = np.full(dim, 0.2)
    truth = frechet_distance(np.zeros(dim), cov_a, mean_b, cov_b)
    chol, covered = np.linalg.cholesky(cov_a), 0
    for seed in range(100):
        x = np.random.default_rng(1000 + seed).normal(size=(n, dim)) @ chol.T
        score = frechet_score(frechet_distance(*mean_and_covariance(x), mean_b, cov_b), x, mean_b, cov_b, seed)
        covered += score.low <= truth <= score.high
    assert 85 <= covered <= 99, covered


def test_rmse_interval_covers_the_known_rmse_about_95_percent():
    # Per-sample mean squared errors e ~ Exp(1) have E e = 1, so the true rmse is 1; same band as above.
    covered = 0
    for seed in range(100):
        e = np.random.default_rng(seed).exponential(size=200)
        score = rmse_score(float(np.sqrt(e.mean())), e, seed)
        covered += score.low <= 1.0 <= score.high
    assert 85 <= covered <= 99, covered


def test_kid_interval_is_about_the_value_and_narrows_with_more_samples():
    rng = np.random.default_rng(2)
    real = rng.normal(size=(400, 8))
    widths = []
    for n in (100, 400):
        fake = rng.normal(size=(n, 8)) * 1.2
        value = kernel_inception_distance(fake, real)
        score = kid_score(value, fake, real, 0)
        assert score.low < value < score.high
        widths.append(score.high - score.low)
    assert widths[1] < widths[0] * 0.75  # about 1/sqrt(n): half the width at 4x the samples


def _entry(value, replicates):
    return Entry(Status.OK, value, replicates=tuple(replicates))


def test_ties_are_paired_same_latents_make_a_small_gap_significant():
    rng = np.random.default_rng(0)
    shared = rng.normal(size=RESAMPLES)  # what the resampled latents do to every cell alike
    best = _entry(1.0, 1.0 + shared)
    close_but_consistently_worse = _entry(1.02, 1.02 + shared + 0.002 * rng.normal(size=RESAMPLES))
    noisy = _entry(1.02, 1.02 + shared + 0.1 * rng.normal(size=RESAMPLES))
    without_replicates = Entry(Status.OK, 1.0001)
    missing = Entry(Status.MISSING)
    marked = mark_column([best, close_but_consistently_worse, noisy, without_replicates, missing], False)
    # The separate intervals (width ~ 4) all overlap; the paired difference separates the second from the best
    # and not the third (its own noise is 50x larger); a record without replicates is never called tied.
    assert [e.best for e in marked] == [True, False, False, False, False]
    assert [e.tied for e in marked] == [False, False, True, False, False]
    assert not tied(1.02, 1.02 + shared + 0.002, 1.0, 1.0 + shared)


def test_recommendation_names_the_best_row_and_those_tied_with_it():
    rng = np.random.default_rng(1)
    shared = rng.normal(size=RESAMPLES)
    rows = [
        ("euler", [_entry(5.0, 5.0 + shared), _entry(2.0, 2.0 + shared)]),
        ("unipc", [_entry(3.0, 3.0 + shared), _entry(1.0, 1.0 + shared + 0.3 * rng.normal(size=RESAMPLES))]),
        ("deis", [_entry(3.1, 3.1 + shared + 0.5 * rng.normal(size=RESAMPLES)), Entry(Status.NA, footnote=1)]),
    ]
    columns = [mark_column([row[c] for _, row in rows], False) for c in range(2)]
    table = MetricTable(
        "fd", "a distance", False, [(label, [col[i] for col in columns]) for i, (label, _) in enumerate(rows)]
    )
    cells = {(label, nfe): {"solver": label, "schedule": "polynomial"} for label, _ in rows for nfe in (5, 10)}
    first, second = recommend(table, [5, 10], cells)
    assert (first.label, first.tied, first.value) == ("unipc", ["deis"], 3.0)
    assert (second.label, second.tied) == ("unipc", [])
    assert "NFE 5: unipc" in first.text() and "tied: deis" in first.text()


def test_primary_metric_defaults_to_the_first_and_refuses_another():
    assert primary_metric(None, ["fd_fmnist", "rmse"]) == "fd_fmnist"
    assert primary_metric("rmse", ["fd_fmnist", "rmse"]) == "rmse"
    with pytest.raises(UserError, match="primary_metric 'fid' is not among"):
        primary_metric("fid", ["fd_fmnist", "rmse"])


def _bench(tmp_path, *args):
    return runner.invoke(
        app,
        ["benchmark", "--model", "gmm-2d", "--solvers", "euler,heun,ipndm", "--nfe", "4,6", "--num-samples", "32"]
        + ["--out", str(tmp_path), "--name", "run", "--device", "cpu", *args],
    )


def test_intervals_ties_and_recommendation_reach_every_report(tmp_path):
    result = _bench(tmp_path, "--set", "primary_metric=pixel_fd")
    assert result.exit_code == 0, result.output
    folder = tmp_path / "run"
    recs = [json.loads(p.read_text()) for p in (folder / "records").rglob("*.json")]
    by_key = {(r["metric"], r["label"], r["nfe"]): r for r in recs}
    for rec in recs:
        if rec["metric"] == "max_error":  # a maximum has no bootstrap interval
            assert rec["low"] is None and rec["replicates"] is None
        else:
            assert rec["low"] <= rec["high"] and len(rec["replicates"]) == RESAMPLES, rec["metric"]
    with open(folder / "table.csv") as f:
        rows = list(csv.DictReader(f))
    row = next(r for r in rows if r["metric"] == "rmse" and r["solver"] == "euler")
    assert float(row["nfe_4_low"]) == by_key[("rmse", "euler", 4)]["low"]
    assert row["nfe_4_tied"] in ("true", "false")
    data = json.loads((folder / "results.json").read_text())
    assert data["primary_metric"] == "pixel_fd" and [r["nfe"] for r in data["recommendation"]] == [4, 6]
    for advice in data["recommendation"]:
        best = min((r["value"], r["label"]) for r in recs if r["metric"] == "pixel_fd" and r["nfe"] == advice["nfe"])
        assert (advice["value"], advice["label"]) == best
    cell = next(c for c in data["cells"] if c["label"] == "euler" and c["nfe"] == 4)
    assert cell["high"]["rmse"] == by_key[("rmse", "euler", 4)]["high"] and isinstance(cell["tied"]["rmse"], bool)
    table = (folder / "table.md").read_text()
    assert "## Recommendation (by pixel_fd)" in table and " ± " in table
    assert "Recommended by pixel_fd:" in result.output and "NFE 6: " in result.output


def test_records_without_intervals_still_load_and_print(tmp_path):
    assert _bench(tmp_path).exit_code == 0
    for path in (tmp_path / "run" / "records").rglob("rmse.json"):  # as records made before intervals
        record = json.loads(path.read_text())
        for key in ("low", "high", "interval", "replicates"):
            record.pop(key)
        path.write_text(json.dumps(record))
    result = _bench(tmp_path)
    assert result.exit_code == 0 and "0 cells sampled" in result.output, result.output
    rmse_part = (tmp_path / "run" / "table.md").read_text().split("## rmse")[1].split("## ")[0]
    rows = [line for line in rmse_part.splitlines() if line.startswith("| ") and not line.startswith("| solver")]
    assert len(rows) == 3 and not any("±" in row or "\\*" in row or "[" in row for row in rows), rows
    assert "**" in "".join(rows)  # the best is still bold


def test_prdc_fmnist_in_a_benchmark(tmp_path):
    rng = np.random.default_rng(5)
    ref = tmp_path / "ref.npz"
    np.savez(ref, images=rng.integers(0, 200, size=(60, 32, 32, 1), dtype=np.uint8))
    config = {"metric_options": {"prdc_fmnist": {"ref": str(ref), "cache_dir": str(tmp_path / "c"), "k": 3}}}
    (tmp_path / "bench.yaml").write_text(yaml.safe_dump(config))
    args = ["benchmark", "-c", str(tmp_path / "bench.yaml"), "--model", "gmm-fmnist", "--solvers", "euler"]
    args += ["--nfe", "4", "--num-samples", "20", "--metrics", "prdc_fmnist", "--out", str(tmp_path)]
    result = runner.invoke(app, [*args, "--name", "run", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    recs = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "run" / "records").rglob("*.json")}
    assert sorted(recs) == sorted(f"{n}_fmnist" for n in ("precision", "recall", "density", "coverage"))
    for name, rec in recs.items():
        assert rec["low"] <= rec["high"] and 0 <= rec["value"] and (name == "density_fmnist" or rec["value"] <= 1)
    assert "PRDC with k = 3 against 20 of its images" in recs["recall_fmnist"]["note"]
    config["metric_options"]["prdc_fmnist"]["k"] = 0
    (tmp_path / "bench.yaml").write_text(yaml.safe_dump(config))
    bad = runner.invoke(app, [*args, "--name", "bad"])
    assert bad.exit_code == 2 and "metric_options.prdc_fmnist.k must be an integer" in bad.output
