"""How heterogeneous a federation is, and how fairly the global model serves it.

Three views, each cheap and each recorded in ``results.json``:

- **Shards** (once, before training): per client the number of examples, the label
  histogram, its entropy and its total-variation distance from the pooled label
  distribution. Label skew made visible, as in the NIID-Bench study (Q. Li, Y. Diao,
  Q. Chen, B. He, "Federated Learning on Non-IID Data Silos: An Experimental Study",
  ICDE 2022, arXiv:2102.02079).
- **Updates** (every round, on the server, no data needed): the cosine similarity of
  each client's update ``Δw_k = w_k − w_global`` to the aggregated update and each
  update's norm. Clients pulling in different directions is how non-IID data shows up
  in parameter space (client drift: S. P. Karimireddy et al., "SCAFFOLD", ICML 2020,
  arXiv:1910.06378).
- **Fairness** (every k rounds, optional): the spread of the global model's accuracy
  over clients' local test splits: mean, std, worst client and the mean of the worst
  10% (the summary of T. Li, M. Sanjabi, A. Beirami, V. Smith, "Fair Resource
  Allocation in Federated Learning", ICLR 2020, arXiv:1905.10497).

The maths is in pure numpy functions; :class:`UpdateTracker` only holds the state the
server needs between Flower's hooks, and :func:`rebuild_shard_counts` is the one
function that touches the data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from flwr.app import ArrayRecord, RecordDict
from scipy.stats import entropy
from sklearn.metrics.pairwise import cosine_similarity

if TYPE_CHECKING:
    from .config import RunConfig

WORST_FRACTION = 0.1  # "worst 10%" of clients in the fairness summary


def _json_float(value: float) -> float | None:
    """A float for ``results.json`` (which refuses NaN): NaN becomes ``None``."""
    return None if math.isnan(value) else float(value)


# --------------------------------------------------------------------------- shards


def label_distributions(counts: np.ndarray) -> np.ndarray:
    """Row-normalise label counts ``(K clients, C classes)`` into distributions.

    A client without examples gets a row of NaN (it has no distribution).
    """
    counts = np.asarray(counts, dtype=np.float64)
    totals = counts.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, counts / totals, np.nan)


def label_entropy(counts: np.ndarray, base: float = 2.0) -> np.ndarray:
    r"""Shannon entropy of each client's label distribution, ``H = -Σ_c p_c log p_c``.

    In bits by default: 0 for a client holding one class, ``log2(C)`` (3.32 for ten
    classes) for a perfectly balanced one. Empty clients give NaN.

    Parameters
    ----------
    counts : np.ndarray
        Label counts, shape ``(C,)`` or ``(K, C)``.
    base : float
        Logarithm base (2: bits, e: nats).
    """
    p = label_distributions(counts)
    return entropy(p, base=base, axis=-1)


def total_variation(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    r"""Total-variation distance ``TV(p, q) = ½ Σ_c |p_c − q_c|`` in [0, 1].

    On categorical labels this *is* the earth mover's (Wasserstein-1) distance with
    the 0/1 ground metric (moving mass between two different classes costs 1): the
    optimal plan keeps the overlap ``min(p_c, q_c)`` in place and moves the rest,
    ``1 − Σ_c min(p_c, q_c) = ½ Σ_c |p_c − q_c|``. (``scipy.stats.wasserstein_distance``
    would instead treat class ids as points on a line, so that "0 vs 9" costs more than
    "0 vs 1", which means nothing for labels.)

    Parameters
    ----------
    p, q : np.ndarray
        Distributions over the same classes, shape ``(..., C)``; broadcast against
        each other (e.g. every client ``(K, C)`` against the global ``(C,)``).
    """
    p, q = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    return 0.5 * np.abs(p - q).sum(axis=-1)


def shard_statistics(counts: np.ndarray) -> dict[str, Any]:
    """JSON-ready statistics of the clients' label histograms ``(K, C)``.

    The global distribution is the pooled one (all shards together, i.e. the training
    set the partitioner split). Entropies are in bits.
    """
    counts = np.asarray(counts, dtype=np.int64)
    if counts.ndim != 2 or counts.shape[0] == 0:
        raise ValueError(f"counts must have shape (clients, classes), got {counts.shape}")
    global_p = label_distributions(counts.sum(axis=0))
    entropies = label_entropy(counts)
    distances = total_variation(label_distributions(counts), global_p)
    sizes = counts.sum(axis=1)
    clients = [
        {
            "partition_id": i,
            "num_examples": int(sizes[i]),
            "label_counts": counts[i].tolist(),
            "label_entropy_bits": _json_float(entropies[i]),
            "tv_distance": _json_float(distances[i]),
        }
        for i in range(counts.shape[0])
    ]
    return {
        "num_partitions": int(counts.shape[0]),
        "num_classes": int(counts.shape[1]),
        "global_label_distribution": global_p.tolist(),
        "max_entropy_bits": math.log2(counts.shape[1]),
        "summary": {
            "num_examples_min": int(sizes.min()),
            "num_examples_max": int(sizes.max()),
            "label_entropy_bits_mean": _json_float(np.nanmean(entropies)),
            "tv_distance_mean": _json_float(np.nanmean(distances)),
            "tv_distance_max": _json_float(np.nanmax(distances)),
            "classes_per_client_mean": float((counts > 0).sum(axis=1).mean()),
        },
        "clients": clients,
    }


def shard_summary_line(stats: dict[str, Any]) -> str:
    """One log line: how many shards, their sizes, entropy and distance from global."""
    s = stats["summary"]
    return (
        f"{stats['num_partitions']} shards of {s['num_examples_min']}-{s['num_examples_max']} "
        f"examples | {s['classes_per_client_mean']:.1f} classes/client | label entropy "
        f"{s['label_entropy_bits_mean']:.2f} of {stats['max_entropy_bits']:.2f} bits | "
        f"TV from global mean {s['tv_distance_mean']:.3f}, max {s['tv_distance_max']:.3f}"
    )


def rebuild_shard_counts(cfg: RunConfig, num_partitions: int) -> np.ndarray:
    """Label counts ``(num_partitions, C)`` of the run's Dirichlet shards.

    Rebuilds the clients' partitioner from the run config (same dataset, alpha, minimum
    size and seed, so the same draw) and counts with flwr-datasets. Valid only where
    node ``i`` of ``N`` holds Dirichlet shard ``i`` of ``N`` of the shared dataset: the
    simulation engine, or a deployment using the same convention. Nodes reading their
    own local data hold shards the server cannot know; run those with
    ``shard-stats = false``.
    """
    from flwr_datasets.metrics import compute_counts

    from .data import NUM_CLASSES, partitioner_for  # heavy imports, only when used

    partitioner = partitioner_for(cfg, num_partitions)
    frame = compute_counts(partitioner, column_name="label")
    frame = frame.reindex(columns=range(NUM_CLASSES), fill_value=0)
    return frame.to_numpy(dtype=np.int64)


# --------------------------------------------------------------------------- updates


def flatten_arrays(record: ArrayRecord) -> np.ndarray:
    """All floating-point arrays of a record as one float64 vector, in record order.

    Integer buffers (e.g. BatchNorm's ``num_batches_tracked``) are counters, not
    parameters, and are left out.
    """
    parts = [
        a.ravel().astype(np.float64)
        for a in record.to_numpy_ndarrays()
        if np.issubdtype(a.dtype, np.floating)
    ]
    return np.concatenate(parts) if parts else np.zeros(0)


def update_statistics(client_updates: np.ndarray, aggregate_update: np.ndarray) -> dict[str, Any]:
    r"""Cosine of each client update to the aggregated update, and update norms.

    ``cos_k = <Δw_k, Δw> / (‖Δw_k‖ ‖Δw‖)`` with ``Δw_k = w_k − w_global`` and
    ``Δw = w_global_new − w_global`` (the weighted mean of the ``Δw_k``). Near 1: the
    client pulls where the federation goes; near 0 or negative: its data pull
    elsewhere. A zero update has cosine 0 (scikit-learn's convention).

    Parameters
    ----------
    client_updates : np.ndarray
        Shape ``(K, P)``: one flattened update per client, in reply order.
    aggregate_update : np.ndarray
        Shape ``(P,)``.
    """
    client_updates = np.atleast_2d(np.asarray(client_updates, dtype=np.float64))
    aggregate_update = np.asarray(aggregate_update, dtype=np.float64).reshape(1, -1)
    cosines = cosine_similarity(client_updates, aggregate_update)[:, 0]
    return {
        "cosine_to_aggregate": cosines.tolist(),
        "cosine_mean": float(cosines.mean()),
        "cosine_min": float(cosines.min()),
        "norm": np.linalg.norm(client_updates, axis=1).tolist(),
        "aggregate_norm": float(np.linalg.norm(aggregate_update)),
    }


class UpdateTracker:
    """Server-side state for :func:`update_statistics` between Flower's hooks.

    Flower hands over the pieces at different moments of a round: the client models
    in the train-metrics hook (inside ``aggregate_train``), the new global model in the
    central evaluation (after aggregation). The global model the clients started
    from is the one the previous central evaluation saw (round 0: the initial model).
    """

    def __init__(self) -> None:
        self._global: np.ndarray | None = None
        self._clients: list[np.ndarray] = []

    def observe_clients(self, contents: Sequence[RecordDict]) -> None:
        """Keep this round's client models (from the replies' ArrayRecords)."""
        self._clients = [
            flatten_arrays(next(iter(c.array_records.values())))
            for c in contents
            if c.array_records
        ]

    def observe_global(self, arrays: ArrayRecord) -> dict[str, Any] | None:
        """Take the new global model; return the round's update statistics, if any.

        ``None`` at round 0 and for a round without client models (no valid reply).
        A client model of another size than the global one is left out: a diagnostic
        must never stop the run it describes.
        """
        new = flatten_arrays(arrays)
        stats = None
        if self._global is not None:
            clients = [c for c in self._clients if c.shape == self._global.shape]
            if clients and new.shape == self._global.shape:
                stats = update_statistics(np.stack(clients) - self._global, new - self._global)
        self._global, self._clients = new, []
        return stats


# --------------------------------------------------------------------------- fairness


def worst_fraction_mean(values: Sequence[float], fraction: float = WORST_FRACTION) -> float:
    """Mean of the lowest ``ceil(fraction * n)`` values (at least one)."""
    v = np.sort(np.asarray(values, dtype=np.float64))
    if v.size == 0:
        raise ValueError("no values")
    # The epsilon keeps 0.1 * 30 = 3.0000000000000004 from rounding up to 4.
    k = max(1, math.ceil(fraction * v.size - 1e-9))
    return float(v[:k].mean())


def fairness_summary(accuracies: Sequence[float]) -> dict[str, float | int]:
    """Spread of per-client accuracy: mean, std (population), worst, worst-10% mean.

    Every client counts once, however many examples it holds: fairness asks how the
    model serves institutions, not examples (the example-weighted mean is Flower's
    aggregated ``accuracy``).
    """
    acc = np.asarray(accuracies, dtype=np.float64)
    if acc.size == 0:
        raise ValueError("no client accuracies")
    return {
        "num_clients": int(acc.size),
        "accuracy_mean": float(acc.mean()),
        "accuracy_std": float(acc.std()),
        "accuracy_worst": float(acc.min()),
        "accuracy_worst_10pct": worst_fraction_mean(acc),
    }


def fairness_record(contents: Sequence[RecordDict]) -> dict[str, Any]:
    """The ``"fairness"`` entry of a round from federated-evaluation reply contents.

    :func:`fairness_summary` of the clients' ``accuracy`` plus each client's reply
    metrics (``num-examples``, ``accuracy``, ``loss``), in reply order.
    """
    clients = [dict(next(iter(c.metric_records.values()))) for c in contents]
    return {**fairness_summary([float(c["accuracy"]) for c in clients]), "clients": clients}


def fairness_summary_line(record: dict[str, Any]) -> str:
    """One log line of a fairness entry."""
    return (
        f"{record['num_clients']} clients | accuracy mean {record['accuracy_mean']:.4f} "
        f"± {record['accuracy_std']:.4f} | worst {record['accuracy_worst']:.4f} | "
        f"worst 10% {record['accuracy_worst_10pct']:.4f}"
    )
