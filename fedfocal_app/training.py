"""Local training and evaluation on decoded tensors (no Flower in here).

The loop batches straight from the shard's tensors with a seeded permutation: no
DataLoader workers, no per-batch decoding. Metrics come from scikit-learn.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data import NUM_CLASSES, Shard
from .losses import balanced_alpha, focal_loss

EVAL_BATCH = 1024  # evaluation has no backward pass: large batches are cheapest


@dataclass(frozen=True)
class TrainSettings:
    """What the strategy tells a client to do this round (from the ConfigRecord)."""

    epochs: int
    batch_size: int
    lr: float
    momentum: float
    weight_decay: float
    loss: str  # "focal" | "ce"
    focal_gamma: float
    focal_alpha: str  # "none" | "balanced"
    proximal_mu: float
    server_round: int
    augment: str = "none"  # "none" | "crop-flip"

    @classmethod
    def from_config(cls, config: Any) -> "TrainSettings":
        """Read the round's settings from the strategy's ConfigRecord (or a dict)."""
        return cls(
            epochs=int(config["local-epochs"]),
            batch_size=int(config["batch-size"]),
            lr=float(config["lr"]),
            momentum=float(config["momentum"]),
            weight_decay=float(config["weight-decay"]),
            loss=str(config["loss"]),
            focal_gamma=float(config["focal-gamma"]),
            focal_alpha=str(config["focal-alpha"]),
            proximal_mu=float(config.get("proximal-mu", 0.0)),
            server_round=int(config["server-round"]),
            augment=str(config.get("augment", "none")),
        )


def pick_device() -> torch.device:
    """CUDA when this worker was given a GPU (Flower's client-resources-num-gpus)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def match_torch_threads() -> int:
    """Use as many intra-op threads as CPUs this worker was given (Ray sets
    OMP_NUM_THREADS to the actor's num-cpus); oversubscribing 2 cores costs ~2x."""
    threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0) or (os.cpu_count() or 1)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


@torch.no_grad()
def predict(model: nn.Module, shard: Shard, device: torch.device) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of ``model`` on ``shard`` and its predicted labels."""
    model.eval()
    total, preds = 0.0, []
    for start in range(0, len(shard), EVAL_BATCH):
        x = shard.x[start : start + EVAL_BATCH].to(device)
        y = shard.y[start : start + EVAL_BATCH].to(device)
        logits = model(x)
        total += F.cross_entropy(logits, y, reduction="sum").item()
        preds.append(logits.argmax(1).cpu())
    return total / max(len(shard), 1), torch.cat(preds).numpy()


def mean_cross_entropy(model: nn.Module, shard: Shard, device: torch.device) -> float:
    """Mean CE of the model as received, on a shard (eval mode, no grad)."""
    return predict(model, shard, device)[0]


def evaluate(model: nn.Module, shard: Shard, device: torch.device) -> dict[str, Any]:
    """Loss, accuracy, balanced accuracy, macro-F1 and per-class recall (scikit-learn)."""
    # imported here: ClientApps (a fresh process per message when deployed) never need it
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, recall_score

    loss, y_pred = predict(model, shard, device)
    y_true = shard.y.numpy()
    labels = list(range(NUM_CLASSES))
    return {
        "loss": loss,
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
        "macro_f1": float(
            f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)
        ),
        "per_class_recall": [
            float(r)
            for r in recall_score(
                y_true, y_pred, labels=labels, average=None, zero_division=0
            )
        ],
    }


def crop_flip(x: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Random crop (zero-padded by ``padding``) and horizontal flip, drawn per example.

    ``torchvision.transforms.v2`` applied to a batch tensor draws one crop and one flip
    for the whole batch; per-example draws on a batch need this gather instead of a
    per-image PIL pipeline. x: (N, C, H, W) -> (N, C, H, W).
    """
    n, c, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(x.device)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]  # (N,1,H,1)
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]  # (N,1,1,W)
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chan = torch.arange(c, device=x.device)[None, :, None, None]
    out = padded[batch, chan, rows, cols]
    flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)[:, None, None, None]
    return torch.where(flip, out.flip(3), out)


def train(
    model: nn.Module,
    shard: Shard,
    settings: TrainSettings,
    device: torch.device,
    seed: int,
) -> float:
    """Train ``model`` in place for ``settings.epochs``; return the mean batch loss.

    The objective is focal loss (gamma, optional balanced alpha) or cross-entropy,
    plus the FedProx term (mu/2)||w - w_global||^2 when ``proximal_mu > 0``.
    """
    model.to(device).train()
    alpha = None
    if settings.loss == "focal" and settings.focal_alpha == "balanced":
        alpha = torch.from_numpy(balanced_alpha(shard.y.numpy(), NUM_CLASSES)).to(device)
    gamma = settings.focal_gamma if settings.loss == "focal" else 0.0
    global_params = (
        [p.detach().clone() for p in model.parameters()] if settings.proximal_mu > 0 else None
    )
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=settings.lr,
        momentum=settings.momentum,
        weight_decay=settings.weight_decay,
    )
    generator = torch.Generator().manual_seed(seed)
    x_all, y_all = shard.x.to(device), shard.y.to(device)
    total, steps = 0.0, 0
    for _ in range(settings.epochs):
        order = torch.randperm(len(shard), generator=generator).to(device)
        for start in range(0, len(shard), settings.batch_size):
            idx = order[start : start + settings.batch_size]
            xb = x_all[idx]
            if settings.augment == "crop-flip":
                xb = crop_flip(xb, generator)
            logits = model(xb)
            loss = focal_loss(logits, y_all[idx], gamma=gamma, alpha=alpha)
            if global_params is not None:
                prox = sum(
                    (p - g).pow(2).sum() for p, g in zip(model.parameters(), global_params)
                )
                loss = loss + 0.5 * settings.proximal_mu * prox
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item()
            steps += 1
    return total / max(steps, 1)
