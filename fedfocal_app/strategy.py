"""FedFocal: a Flower strategy that focuses aggregation on badly served clients.

D. Sarkar, A. Narang, S. Rai, "Fed-Focal Loss for imbalanced data classification in
Federated Learning", arXiv:2011.06283 (2020). Clients train with focal loss
(Lin et al., arXiv:1708.02002); the server lifts the focal idea from examples to
clients: a client on which the received global model has a high loss L_k gets more
weight, and (optionally) is sampled more often.

The maths is in the pure functions below; :class:`FedFocal` only wires them into
Flower's ``FedAvg``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from logging import INFO, WARNING

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, FedProx
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords, sample_nodes
from flwr.supercore import log

FOCAL_WEIGHT_KEY = "fedfocal-weight"


def focal_factors(losses: Sequence[float] | np.ndarray, gamma_s: float) -> np.ndarray:
    r"""Client focus factors  f_k = (1 - e^{-L_k})^{gamma_s}.

    ``1 - e^{-L}`` is the focal "1 - p" for a loss ``L = -log p``: near 0 for a client
    the global model already fits (L -> 0) and near 1 for one it fails (L large).
    ``L = inf`` (a client never seen) gives 1, the largest factor. ``gamma_s = 0``
    gives exactly 1 for every client.
    """
    if not gamma_s >= 0:
        raise ValueError(f"gamma_s must be >= 0, got {gamma_s}")
    loss = np.asarray(losses, dtype=np.float64)
    if np.any(np.isnan(loss)) or np.any(loss < 0):
        raise ValueError(f"losses must be >= 0 and not NaN, got {loss}")
    return (-np.expm1(-loss)) ** gamma_s  # 0**0 == 1, so gamma_s = 0 is FedAvg


def focal_client_weights(
    num_examples: Sequence[float] | np.ndarray,
    losses: Sequence[float] | np.ndarray,
    gamma_s: float,
) -> np.ndarray:
    r"""Unnormalised FedFocal aggregation weights  w_k = n_k (1 - e^{-L_k})^{gamma_s}.

    Fed-Focal (Sarkar et al., arXiv:2011.06283): with n_k the client's number of
    training examples and L_k the mean cross-entropy of the *received* global model on
    the client's data (measured before local training), the aggregate is
    ``sum_k w_k theta_k / sum_k w_k``. ``gamma_s = 0`` returns ``n_k`` itself, so the
    aggregate is FedAvg's, bit for bit. If every factor is 0 (all losses exactly 0)
    the weights fall back to ``n_k``.
    """
    n = np.asarray(num_examples, dtype=np.float64)
    if n.shape != np.shape(losses):
        raise ValueError(f"{n.shape[0]} example counts but {len(losses)} losses")
    weights = n * focal_factors(losses, gamma_s)
    if weights.sum() <= 0:
        return n
    return weights


def focal_sampling_probabilities(
    losses: Sequence[float] | np.ndarray, gamma_s: float, mix: float
) -> np.ndarray:
    r"""Per-client sampling probabilities for Fed-Focal's tunable sampling.

    ``p_k = (1 - mix) * f_k / sum_j f_j + mix / K`` with ``f_k = (1 - e^{-L_k})^{gamma_s}``
    from each client's last known loss (``inf`` for clients never sampled, i.e. the
    hardest). ``mix = 1`` is uniform sampling; ``mix = 0`` samples purely by focus.
    A positive ``mix`` keeps every client reachable, so no loss estimate goes stale
    forever.
    """
    if not 0.0 <= mix <= 1.0:
        raise ValueError(f"mix must lie in [0, 1], got {mix}")
    f = focal_factors(losses, gamma_s)
    k = f.shape[0]
    focus = f / f.sum() if f.sum() > 0 else np.full(k, 1.0 / k)
    return (1.0 - mix) * focus + mix / k


class AppStrategyMixin:
    """What every strategy gets as this app runs it (FedFocal, FedAvg, FedProx).

    Mixed in before a Flower strategy class, it overrides only what the app adds:

    - federated evaluation every ``evaluate_every`` rounds (0 = never);
    - ``client_weights``: the aggregation weight of each valid reply (``n_k`` here;
      FedFocal overrides it).
    """

    evaluate_every: int = 0

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Federated evaluation only on rounds that are multiples of ``evaluate_every``."""
        if self.evaluate_every <= 0 or server_round % self.evaluate_every:
            return []
        return super().configure_evaluate(server_round, arrays, config, grid)  # type: ignore[misc]


class AppFedAvg(AppStrategyMixin, FedAvg):
    """Flower's FedAvg as the app runs it."""


class AppFedProx(AppStrategyMixin, FedProx):
    """Flower's FedProx as the app runs it."""


class FedFocal(AppStrategyMixin, FedAvg):
    """FedAvg with Fed-Focal aggregation weights and optional focal client sampling.

    Parameters
    ----------
    focal_gamma : float (default: 2.0)
        Client focal-loss gamma, sent to clients as ``focal-gamma`` each round.
    aggregation_gamma : float (default: 1.0)
        Server gamma_s in ``w_k ~ n_k (1 - e^{-L_k})^{gamma_s}``; 0 is FedAvg.
    sampling : {"uniform", "focal"} (default: "uniform")
        ``"focal"`` samples clients by :func:`focal_sampling_probabilities` when fewer
        than all nodes are trained per round.
    sampling_mix : float (default: 0.5)
        Share of uniform probability mixed into focal sampling (1 = uniform).
    pre_train_loss_key : str (default: "pre_train_loss")
        MetricRecord key holding L_k, the global model's loss on the client.
    seed : int, optional
        Seed of focal sampling.
    **kwargs
        Passed to :class:`flwr.serverapp.strategy.FedAvg`.
    """

    def __init__(
        self,
        *,
        focal_gamma: float = 2.0,
        aggregation_gamma: float = 1.0,
        sampling: str = "uniform",
        sampling_mix: float = 0.5,
        pre_train_loss_key: str = "pre_train_loss",
        seed: int | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if not focal_gamma >= 0 or not aggregation_gamma >= 0:
            raise ValueError("focal_gamma and aggregation_gamma must be >= 0")
        if sampling not in ("uniform", "focal"):
            raise ValueError(f"sampling must be 'uniform' or 'focal', got {sampling!r}")
        if not 0.0 <= sampling_mix <= 1.0:
            raise ValueError(f"sampling_mix must lie in [0, 1], got {sampling_mix}")
        self.focal_gamma = focal_gamma
        self.aggregation_gamma = aggregation_gamma
        self.sampling = sampling
        self.sampling_mix = sampling_mix
        self.pre_train_loss_key = pre_train_loss_key
        self.rng = np.random.default_rng(seed)
        # Last known L_k per node id: the server state focal sampling needs.
        self.client_losses: dict[int, float] = {}
        if aggregation_gamma == 0.0:
            log(WARNING, "FedFocal with aggregation_gamma=0: aggregation equals FedAvg.")
        if sampling == "focal" and self.fraction_train >= 1.0:
            log(WARNING, "sampling='focal' has no effect with fraction_train=1.0.")

    def summary(self) -> None:
        """Log the FedFocal settings, then FedAvg's."""
        log(INFO, "\t├──> FedFocal settings:")
        log(INFO, "\t│\t├── Client focal gamma: %s", self.focal_gamma)
        log(INFO, "\t│\t├── Aggregation gamma_s: %s", self.aggregation_gamma)
        log(INFO, "\t│\t├── Sampling: %s (uniform mix %s)", self.sampling, self.sampling_mix)
        log(INFO, "\t│\t└── Loss key: '%s'", self.pre_train_loss_key)
        super().summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Send ``focal-gamma`` with the round's config; sample by focus if asked."""
        config["focal-gamma"] = self.focal_gamma
        if self.sampling == "uniform" or self.fraction_train >= 1.0:
            return super().configure_train(server_round, arrays, config, grid)

        num_nodes = int(len(list(grid.get_node_ids())) * self.fraction_train)
        sample_size = max(num_nodes, self.min_train_nodes)
        _, all_nodes = sample_nodes(grid, self.min_available_nodes, sample_size)
        losses = [self.client_losses.get(n, np.inf) for n in all_nodes]
        probs = focal_sampling_probabilities(losses, self.aggregation_gamma, self.sampling_mix)
        chosen = self.rng.choice(len(all_nodes), size=sample_size, replace=False, p=probs)
        node_ids = [all_nodes[i] for i in sorted(chosen)]
        log(INFO, "configure_train: focal-sampled %s nodes (out of %s)", sample_size, len(all_nodes))
        config["server-round"] = server_round
        record = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: config})
        return self._construct_messages(record, node_ids, "train")

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Average client arrays with weights n_k (1 - e^{-L_k})^{gamma_s}."""
        valid, _ = self._check_and_log_replies(replies, is_train=True)
        if not valid:
            return None, None
        contents = [msg.content for msg in valid]
        metrics = [next(iter(c.metric_records.values())) for c in contents]
        num_examples = [float(m[self.weighted_by_key]) for m in metrics]
        losses = [float(m[self.pre_train_loss_key]) for m in metrics]
        for msg, loss in zip(valid, losses):
            self.client_losses[msg.metadata.src_node_id] = loss

        weights = focal_client_weights(num_examples, losses, self.aggregation_gamma)
        weighted = [
            RecordDict(
                {
                    **dict(c.array_records.items()),
                    "weight": MetricRecord({FOCAL_WEIGHT_KEY: float(w)}),
                }
            )
            for c, w in zip(contents, weights)
        ]
        arrays = aggregate_arrayrecords(weighted, FOCAL_WEIGHT_KEY)
        return arrays, self.train_metrics_aggr_fn(contents, self.weighted_by_key)
