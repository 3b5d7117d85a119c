"""Reply validation and influence bounds: pure functions, testable without Flower.

Flower 1.42 ends a run when one reply is malformed, averages NaN silently, and lets a
client claim any ``num-examples``. The strategy calls these before aggregating, so a
bad reply is dropped with a reason instead.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, RecordDict
from flwr.serverapp import Grid

TRAIN_METRICS = ("num-examples", "train_loss", "pre_train_loss")


class NodeWaitTimeout(RuntimeError):
    """Fewer SuperNodes than required connected within the wait limit."""


def _is_finite_scalar(value: Any) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


def check_metrics(
    content: RecordDict, required: tuple[str, ...], max_num_examples: float
) -> str | None:
    """Reason to drop a reply for its MetricRecord, or None when it is usable."""
    if len(content.metric_records) != 1:
        return f"expected 1 MetricRecord, got {len(content.metric_records)}"
    metrics = next(iter(content.metric_records.values()))
    for key in required:
        if key not in metrics:
            return f"metric '{key}' missing"
        if not _is_finite_scalar(metrics[key]):
            return f"metric '{key}' = {metrics[key]!r} is not a finite number"
    if "num-examples" in required:
        n = metrics["num-examples"]
        if n <= 0:
            return f"num-examples = {n} is not positive"
        if n > max_num_examples:
            return f"num-examples = {n:g} exceeds max-num-examples = {max_num_examples:g}"
    if "pre_train_loss" in required and metrics["pre_train_loss"] < 0:
        return f"pre_train_loss = {metrics['pre_train_loss']} is negative"
    return None


def check_arrays(content: RecordDict, reference: ArrayRecord) -> str | None:
    """Reason to drop a reply for its ArrayRecord, or None when it matches ``reference``.

    Keys, shapes and dtypes must equal the global model's, and every value be finite.
    """
    if len(content.array_records) != 1:
        return f"expected 1 ArrayRecord, got {len(content.array_records)}"
    arrays = next(iter(content.array_records.values()))
    if set(arrays.keys()) != set(reference.keys()):
        missing = sorted(set(reference.keys()) - set(arrays.keys()))
        extra = sorted(set(arrays.keys()) - set(reference.keys()))
        return f"array keys differ from the global model (missing {missing}, extra {extra})"
    for key, ref in reference.items():
        arr = arrays[key]
        if tuple(arr.shape) != tuple(ref.shape) or arr.dtype != ref.dtype:
            return (
                f"array '{key}' is {arr.dtype}{list(arr.shape)}, "
                f"the global model's is {ref.dtype}{list(ref.shape)}"
            )
        try:
            values = arr.numpy()
        except Exception as err:  # undecodable bytes
            return f"array '{key}' cannot be decoded ({err})"
        if not np.all(np.isfinite(values)):
            return f"array '{key}' contains NaN or Inf"
    return None


def cap_shares(weights: np.ndarray, max_share: float) -> np.ndarray:
    """Rescale ``weights`` so no share exceeds ``max_share``; mass goes to the others.

    Water-filling: clip the largest shares to the cap, hand the excess to the uncapped
    clients in proportion to their weights, repeat until none exceeds it. A cap below
    1/K cannot hold for K clients and becomes 1/K (equal shares). When no share
    exceeds the cap the input is returned unchanged (so FedAvg stays bit-exact).

    Returns
    -------
    ndarray
        Weights (not normalised when returned unchanged; otherwise shares summing to 1).
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or w.size == 0 or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"weights must be a non-empty 1-D array >= 0 with a positive sum: {w}")
    cap = max(float(max_share), 1.0 / w.size)
    shares = w / w.sum()
    if shares.max() <= cap:
        return w
    capped = np.zeros(w.size, dtype=bool)
    while True:
        capped |= shares > cap * (1 + 1e-12)
        free = 1.0 - cap * capped.sum()
        rest = np.where(capped, 0.0, w)
        if rest.sum() <= 0:  # everything capped: equal shares
            return np.where(capped, 1.0 / capped.sum(), 0.0)
        shares = np.where(capped, cap, free * rest / rest.sum())
        if shares.max() <= cap * (1 + 1e-12):
            return shares


def wait_for_nodes(grid: Grid, needed: int, timeout: float, poll: float = 1.0) -> list[int]:
    """Node ids once ``needed`` SuperNodes are connected; raise after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        nodes = list(grid.get_node_ids())
        if len(nodes) >= needed:
            return nodes
        if time.monotonic() >= deadline:
            raise NodeWaitTimeout(
                f"only {len(nodes)} of the {needed} SuperNodes required "
                f"(min-available-nodes) connected within node-wait-timeout = {timeout:g}s. "
                "Check that the SuperNodes run and reach the SuperLink, or lower "
                "min-available-nodes."
            )
        time.sleep(poll)
