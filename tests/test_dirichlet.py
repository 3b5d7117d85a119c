"""The Dirichlet chain of fedfocal_app.dirichlet, checked against hand values and numpy."""

import numpy as np
import pytest
from scipy import stats

from fedfocal_app.dirichlet import (
    bernoulli_waiting_times,
    dirichlet_from_gammas,
    dirichlet_mean,
    dirichlet_variance,
    gamma_from_exponentials,
)


def test_moments_by_hand():
    # Dir(1, 1): X_1 is uniform on [0, 1], mean 1/2, variance 1/12.
    np.testing.assert_allclose(dirichlet_mean([1, 1]), [0.5, 0.5])
    np.testing.assert_allclose(dirichlet_variance([1, 1]), [1 / 12, 1 / 12])
    # Dir(1, 2, 3): alpha_0 = 6, Var X_1 = 1 * 5 / (36 * 7).
    np.testing.assert_allclose(dirichlet_mean([1, 2, 3]), [1 / 6, 2 / 6, 3 / 6])
    np.testing.assert_allclose(
        dirichlet_variance([1, 2, 3]), [5 / 252, 8 / 252, 9 / 252]
    )


def test_draws_lie_on_the_simplex():
    x = dirichlet_from_gammas([0.5, 1.0, 2.0, 4.0], 1000, np.random.default_rng(0))
    assert x.shape == (1000, 4)
    assert np.all(x >= 0)
    np.testing.assert_allclose(x.sum(axis=1), 1.0)


@pytest.mark.parametrize("alpha", [[0.5, 0.5, 0.5], [1.0, 2.0, 3.0], [5.0, 1.0]])
def test_normalised_gammas_have_dirichlet_moments(alpha):
    x = dirichlet_from_gammas(alpha, 200_000, np.random.default_rng(1))
    np.testing.assert_allclose(x.mean(axis=0), dirichlet_mean(alpha), atol=3e-3)
    np.testing.assert_allclose(x.var(axis=0), dirichlet_variance(alpha), rtol=3e-2)


def test_normalised_gammas_match_numpy_dirichlet_in_distribution():
    alpha = [0.3, 1.0, 2.0]
    ours = dirichlet_from_gammas(alpha, 20_000, np.random.default_rng(2))
    theirs = np.random.default_rng(3).dirichlet(alpha, 20_000)
    for i in range(len(alpha)):
        assert stats.ks_2samp(ours[:, i], theirs[:, i]).pvalue > 0.01


def test_tiny_alpha_rows_still_sum_to_one():
    x = dirichlet_from_gammas([1e-4] * 5, 2000, np.random.default_rng(4))
    np.testing.assert_allclose(x.sum(axis=1), 1.0)
    assert np.all(np.isfinite(x))


def test_gamma_from_exponentials_has_mean_and_variance_k():
    g = gamma_from_exponentials(3, 100_000, np.random.default_rng(5))
    assert g.mean() == pytest.approx(3.0, rel=0.02)
    assert g.var() == pytest.approx(3.0, rel=0.05)
    assert stats.kstest(g[:5000], stats.gamma(a=3).cdf).pvalue > 0.01


def test_bernoulli_waiting_times_are_exponential():
    gaps = bernoulli_waiting_times(2.0, 1e-3, 2_000_000, np.random.default_rng(6))
    assert gaps.mean() == pytest.approx(0.5, rel=0.03)  # 1 / rate
    assert gaps.std() == pytest.approx(0.5, rel=0.05)  # exponential: std = mean


@pytest.mark.parametrize("alpha", [[1.0], [[1.0, 2.0]], [1.0, 0.0], [1.0, -1.0], [1.0, np.nan]])
def test_bad_alpha_is_refused(alpha):
    with pytest.raises(ValueError, match="alpha"):
        dirichlet_from_gammas(alpha, 10, np.random.default_rng(0))


@pytest.mark.parametrize("rate, dt", [(0.0, 0.1), (1.0, 0.0), (20.0, 0.1)])
def test_bad_bernoulli_grid_is_refused(rate, dt):
    with pytest.raises(ValueError):
        bernoulli_waiting_times(rate, dt, 10, np.random.default_rng(0))
