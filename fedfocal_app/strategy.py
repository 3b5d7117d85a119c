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

import math
from collections.abc import Iterable, Sequence
from logging import INFO, WARNING
from typing import Any

import numpy as np
from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, FedProx
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords
from flwr.supercore import log

from .robust import TRAIN_METRICS, cap_shares, check_arrays, check_metrics, wait_for_nodes

WEIGHT_KEY = "fedfocal-aggregation-weight"


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

    Mixed in before a Flower strategy class, it changes only what the app adds:

    - every reply is validated before aggregation; a bad one (wrong records, keys,
      shapes or dtypes, NaN/Inf, missing or non-finite metrics, implausible
      ``num-examples``) is dropped with one warning naming node and reason;
    - no client's share of the aggregate exceeds ``max_client_weight``;
    - with fewer than ``min_valid_replies`` usable replies the round keeps the
      previous global model;
    - waiting for SuperNodes gives up after ``node_wait_timeout`` seconds;
    - rounds are numbered from ``round_offset`` (a resumed run continues its count);
    - federated evaluation runs every ``evaluate_every`` rounds (0 = never);
    - aggregation is independent of reply arrival order (replies are summed in a
      canonical order), so a run is reproducible from its seed.

    ``client_weights`` gives the unnormalised aggregation weight of each valid reply
    (``n_k`` here; FedFocal overrides it).
    """

    max_client_weight: float = 1.0
    min_valid_replies: int = 1
    max_num_examples: float = math.inf
    node_wait_timeout: float = math.inf
    round_offset: int = 0
    evaluate_every: int = 0
    required_train_metrics: tuple[str, ...] = TRAIN_METRICS

    def summary(self) -> None:
        """Log the app's reliability settings, then the Flower strategy's."""
        log(INFO, "\t├──> App settings:")
        log(INFO, "\t│\t├── Max client share: %s", self.max_client_weight)
        log(INFO, "\t│\t├── Min valid replies: %d", self.min_valid_replies)
        log(INFO, "\t│\t├── Max num-examples: %g", self.max_num_examples)
        log(INFO, "\t│\t├── Node wait timeout: %g s", self.node_wait_timeout)
        log(INFO, "\t│\t└── Federated evaluation every: %d rounds (0 = never)", self.evaluate_every)
        super().summary()  # type: ignore[misc]

    # ------------------------------------------------------------------ hooks
    def client_weights(self, metrics: list[MetricRecord]) -> np.ndarray:
        """Unnormalised aggregation weights of valid replies: ``n_k`` (FedAvg)."""
        return np.array([float(m[self.weighted_by_key]) for m in metrics])  # type: ignore[attr-defined]

    def state_dict(self) -> dict[str, Any]:
        """Strategy state a checkpoint must keep (none for FedAvg/FedProx)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""

    # ------------------------------------------------------------------ train
    def begin_train_round(self, server_round: int, arrays: ArrayRecord, grid: Grid) -> int:
        """Remember the arrays sent, wait for nodes (bounded); return the true round."""
        self.sent_arrays = arrays
        self.round_report: dict[str, Any] = {"dropped": [], "failed": 0, "capped": False}
        wait_for_nodes(grid, self.min_available_nodes, self.node_wait_timeout)  # type: ignore[attr-defined]
        return server_round + self.round_offset

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Flower's sampling, with a bounded wait and the resumed round number."""
        true_round = self.begin_train_round(server_round, arrays, grid)
        return super().configure_train(true_round, arrays, config, grid)  # type: ignore[misc]

    def valid_train_replies(self, replies: Iterable[Message]) -> list[Message]:
        """Replies fit to aggregate; each dropped one is logged and counted."""
        valid = []
        for msg in replies:
            node = msg.metadata.src_node_id
            if msg.has_error():
                self.round_report["failed"] += 1
                log(WARNING, "dropping reply from node %d: client error: %s", node, msg.error.reason)
                continue
            reason = check_metrics(
                msg.content, self.required_train_metrics, self.max_num_examples
            ) or check_arrays(msg.content, self.sent_arrays)
            if reason:
                self.round_report["dropped"].append({"node": node, "reason": reason})
                log(WARNING, "dropping reply from node %d: %s", node, reason)
                continue
            valid.append(msg)
        # Canonical summation order: float sums then do not depend on arrival order.
        return sorted(valid, key=lambda m: _metric_key(m, self.required_train_metrics))

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Validate, weight (``client_weights``), cap, then average arrays."""
        valid = self.valid_train_replies(replies)
        self.round_report["valid"] = len(valid)
        log(
            INFO,
            "aggregate_train: %d valid replies, %d dropped, %d failed",
            len(valid),
            len(self.round_report["dropped"]),
            self.round_report["failed"],
        )
        if len(valid) < max(self.min_valid_replies, 1):
            log(
                WARNING,
                "only %d valid replies (min-valid-replies = %d): keeping the previous "
                "global model this round",
                len(valid),
                self.min_valid_replies,
            )
            return None, None
        contents = [msg.content for msg in valid]
        metrics = [next(iter(c.metric_records.values())) for c in contents]
        weights = self.client_weights(metrics)
        capped = cap_shares(weights, self.max_client_weight)
        self.round_report["capped"] = capped is not weights
        self.round_report["shares"] = (capped / capped.sum()).tolist()
        weighted = [
            RecordDict({**dict(c.array_records.items()), "w": MetricRecord({WEIGHT_KEY: float(w)})})
            for c, w in zip(contents, capped)
        ]
        arrays = aggregate_arrayrecords(weighted, WEIGHT_KEY)
        return arrays, self.train_metrics_aggr_fn(contents, self.weighted_by_key)  # type: ignore[attr-defined]

    # --------------------------------------------------------------- evaluate
    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Federated evaluation only on rounds that are multiples of ``evaluate_every``."""
        true_round = server_round + self.round_offset
        if self.evaluate_every <= 0 or true_round % self.evaluate_every:
            return []
        return super().configure_evaluate(true_round, arrays, config, grid)  # type: ignore[misc]

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Drop malformed evaluation replies instead of ending the run."""
        valid = []
        for msg in replies:
            if msg.has_error():
                continue
            reason = check_metrics(msg.content, ("num-examples",), self.max_num_examples)
            if reason:
                log(WARNING, "dropping evaluate reply from node %d: %s", msg.metadata.src_node_id, reason)
                continue
            valid.append(msg)
        if not valid:
            return None
        return super().aggregate_evaluate(server_round + self.round_offset, valid)  # type: ignore[misc]


def _metric_key(msg: Message, keys: tuple[str, ...]) -> tuple[float, ...]:
    metrics = next(iter(msg.content.metric_records.values()))
    return tuple(float(metrics[k]) for k in keys)


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

        config["server-round"] = self.begin_train_round(server_round, arrays, grid)
        all_nodes = list(grid.get_node_ids())
        sample_size = min(
            max(int(len(all_nodes) * self.fraction_train), self.min_train_nodes),
            len(all_nodes),
        )
        losses = [self.client_losses.get(n, np.inf) for n in all_nodes]
        probs = focal_sampling_probabilities(losses, self.aggregation_gamma, self.sampling_mix)
        chosen = self.rng.choice(len(all_nodes), size=sample_size, replace=False, p=probs)
        node_ids = [all_nodes[i] for i in sorted(chosen)]
        log(INFO, "configure_train: focal-sampled %s nodes (out of %s)", sample_size, len(all_nodes))
        record = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: config})
        return self._construct_messages(record, node_ids, MessageType.TRAIN)

    def valid_train_replies(self, replies: Iterable[Message]) -> list[Message]:
        """Valid replies; their ``pre_train_loss`` becomes the node's last known L_k."""
        valid = super().valid_train_replies(replies)
        for msg in valid:
            metrics = next(iter(msg.content.metric_records.values()))
            self.client_losses[msg.metadata.src_node_id] = float(metrics[self.pre_train_loss_key])
        return valid

    def client_weights(self, metrics: list[MetricRecord]) -> np.ndarray:
        """FedFocal weights n_k (1 - e^{-L_k})^{gamma_s} (:func:`focal_client_weights`)."""
        return focal_client_weights(
            [float(m[self.weighted_by_key]) for m in metrics],
            [float(m[self.pre_train_loss_key]) for m in metrics],
            self.aggregation_gamma,
        )

    def state_dict(self) -> dict[str, Any]:
        """Last known client losses and the sampling RNG, for checkpoints."""
        return {
            "client_losses": {str(k): v for k, v in self.client_losses.items()},
            "rng": self.rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.client_losses = {int(k): float(v) for k, v in state.get("client_losses", {}).items()}
        if "rng" in state:
            self.rng.bit_generator.state = state["rng"]
