"""The Dirichlet distribution from first principles, for the walkthrough notebook.

The chain, each step a limit or a sum of the one before:

1. **Binomial -> Poisson.** Split a unit of time into ``n`` slots, each holding an
   event with probability ``rate / n``. The number of events is Binomial(n, rate/n);
   as ``n -> inf`` it becomes Poisson(rate).
2. **Poisson -> exponential.** In that process the waiting time between two events
   is Exponential(rate) (:func:`bernoulli_waiting_times` measures it on a fine grid).
3. **Exponential -> Gamma.** The waiting time until the ``k``-th event, a sum of ``k``
   independent Exponential(1) gaps, is Gamma(k, 1) (:func:`gamma_from_exponentials`);
   the Gamma family extends this to any real shape ``alpha > 0``.
4. **Gamma -> Dirichlet.** Draw ``G_i ~ Gamma(alpha_i, 1)`` independently for the K
   classes; ``(G_1, ..., G_K) / sum_j G_j`` is Dirichlet(alpha)
   (:func:`dirichlet_from_gammas`), with the moments of :func:`dirichlet_mean` and
   :func:`dirichlet_variance`.

flwr-datasets' ``DirichletPartitioner`` draws, for every class, the share of that
class each client receives from such a Dirichlet: a small concentration ``alpha``
gives each class to few clients (strong label skew), a large one spreads it evenly.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _alpha_vector(alpha: Sequence[float] | np.ndarray) -> np.ndarray:
    a = np.asarray(alpha, dtype=np.float64)
    if a.ndim != 1 or a.shape[0] < 2:
        raise ValueError(f"alpha must be a 1-D vector of K >= 2 values, got shape {a.shape}")
    if not np.all(np.isfinite(a)) or np.any(a <= 0):
        raise ValueError(f"every alpha_i must be a finite number > 0, got {a}")
    return a


def bernoulli_waiting_times(
    rate: float, dt: float, num_steps: int, rng: np.random.Generator
) -> np.ndarray:
    """Gaps between events of a Bernoulli process on a grid of step ``dt``.

    Each of ``num_steps`` slots of length ``dt`` holds an event with probability
    ``rate * dt`` (the binomial picture of a Poisson process). As ``dt -> 0`` the gaps
    follow Exponential(rate): mean ``1 / rate``, variance ``1 / rate**2``.

    Returns
    -------
    ndarray, shape (num_events - 1,)
        Time between consecutive events, in the same unit as ``dt``.
    """
    if not rate > 0 or not dt > 0 or rate * dt > 1:
        raise ValueError(f"need rate > 0, dt > 0 and rate * dt <= 1, got {rate}, {dt}")
    events = np.flatnonzero(rng.random(num_steps) < rate * dt)
    return np.diff(events) * dt


def gamma_from_exponentials(
    k: int, size: int, rng: np.random.Generator
) -> np.ndarray:
    """``size`` draws of Gamma(k, 1), each the sum of ``k`` Exponential(1) variables.

    The waiting time until the ``k``-th event of a rate-1 Poisson process; mean and
    variance are both ``k``.
    """
    if k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k}")
    return rng.exponential(1.0, size=(size, k)).sum(axis=1)


def dirichlet_from_gammas(
    alpha: Sequence[float] | np.ndarray, size: int, rng: np.random.Generator
) -> np.ndarray:
    """``size`` draws of Dirichlet(alpha), built as normalised independent Gammas.

    ``G_i ~ Gamma(alpha_i, 1)`` independently, then ``X_i = G_i / sum_j G_j``. This is
    also how ``numpy.random.Generator.dirichlet`` samples (for alpha not too small).

    Parameters
    ----------
    alpha : sequence of float, length K >= 2
        Concentration parameters, each > 0.
    size : int
        Number of draws.
    rng : numpy.random.Generator
        Source of randomness.

    Returns
    -------
    ndarray, shape (size, K)
        Each row lies on the simplex: non-negative, sums to 1.
    """
    a = _alpha_vector(alpha)
    gammas = rng.gamma(shape=a, scale=1.0, size=(size, a.shape[0]))  # (size, K)
    total = gammas.sum(axis=1, keepdims=True)
    # With tiny alpha every Gamma draw of a row can underflow to 0; such a row has
    # all its mass on one class in the limit, which is what numpy returns too.
    empty = total[:, 0] == 0
    if np.any(empty):
        gammas[empty, rng.integers(0, a.shape[0], size=int(empty.sum()))] = 1.0
        total = gammas.sum(axis=1, keepdims=True)
    return gammas / total


def dirichlet_mean(alpha: Sequence[float] | np.ndarray) -> np.ndarray:
    """``E[X_i] = alpha_i / alpha_0`` with ``alpha_0 = sum_j alpha_j``; shape (K,)."""
    a = _alpha_vector(alpha)
    return a / a.sum()


def dirichlet_variance(alpha: Sequence[float] | np.ndarray) -> np.ndarray:
    """``Var[X_i] = alpha_i (alpha_0 - alpha_i) / (alpha_0^2 (alpha_0 + 1))``; shape (K,)."""
    a = _alpha_vector(alpha)
    a0 = a.sum()
    return a * (a0 - a) / (a0**2 * (a0 + 1.0))
