"""Client objectives: multi-class focal loss and its per-class weights.

Focal loss: T.-Y. Lin, P. Goyal, R. Girshick, K. He, P. Dollar, "Focal Loss for Dense
Object Detection", ICCV 2017, arXiv:1708.02002. Used as the client objective of
Fed-Focal: D. Sarkar, A. Narang, S. Rai, "Fed-Focal Loss for imbalanced data
classification in Federated Learning", arXiv:2011.06283.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

REDUCTIONS = ("none", "mean", "sum")


def focal_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    gamma: float = 2.0,
    alpha: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""Multi-class focal loss  FL = -alpha_y (1 - p_y)^gamma log p_y.

    Computed from ``log_softmax`` (never from probabilities), and ``1 - p_y`` as
    ``-expm1(log p_y)``, so it stays finite and accurate for confident predictions.
    With ``gamma = 0`` and ``alpha = None`` it equals ``F.cross_entropy``.

    Parameters
    ----------
    logits : Tensor, shape (N, C)
        Unnormalised class scores.
    targets : Tensor, shape (N,)
        Class indices in ``[0, C)``.
    gamma : float
        Focusing parameter, >= 0. Larger values down-weight well-classified examples.
    alpha : Tensor, shape (C,), optional
        Per-class weights (e.g. :func:`balanced_alpha`). ``None`` means all ones.
    reduction : {"none", "mean", "sum"}
        ``"none"`` returns shape (N,); ``"mean"`` averages over the N examples (as
        torchvision's ``sigmoid_focal_loss`` does, not over the sum of alpha weights).
    """
    if logits.ndim != 2:
        raise ValueError(f"logits must have shape (N, C), got {tuple(logits.shape)}")
    if targets.ndim != 1 or targets.shape[0] != logits.shape[0]:
        raise ValueError(
            f"targets must have shape ({logits.shape[0]},), got {tuple(targets.shape)}"
        )
    if not gamma >= 0:  # also rejects NaN
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if alpha is not None and (alpha.ndim != 1 or alpha.shape[0] != logits.shape[1]):
        raise ValueError(
            f"alpha must have shape ({logits.shape[1]},), got {tuple(alpha.shape)}"
        )

    log_p_t = F.log_softmax(logits, dim=1).gather(1, targets.unsqueeze(1)).squeeze(1)
    loss = -log_p_t
    if gamma != 0:
        one_minus_p_t = -torch.expm1(log_p_t)  # 1 - p_t without cancellation
        loss = one_minus_p_t.clamp_min(0).pow(gamma) * loss
    if alpha is not None:
        loss = alpha.to(loss.dtype)[targets] * loss

    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def balanced_alpha(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Per-class weights from a client's own labels: inverse frequency, mean 1.

    Uses scikit-learn's ``compute_class_weight("balanced")`` on the classes the client
    holds, then rescales so the weights average to 1 over those classes. Classes the
    client does not hold get weight 0 (they never occur as targets on this client).

    Returns
    -------
    ndarray, shape (num_classes,), float32
    """
    from sklearn.utils.class_weight import compute_class_weight  # only with balanced alpha

    labels = np.asarray(labels)
    if labels.size == 0:
        raise ValueError("balanced_alpha needs at least one label")
    present = np.unique(labels)
    if present.min() < 0 or present.max() >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}), got {present}")
    weights = compute_class_weight("balanced", classes=present, y=labels)
    alpha = np.zeros(num_classes, dtype=np.float32)
    alpha[present] = weights / weights.mean()
    return alpha
