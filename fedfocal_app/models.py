"""Models. No I/O and no training logic here."""

from __future__ import annotations

import torch
from torch import nn


class SimpleCNN(nn.Module):
    """The "simple-cnn" of NIID-Bench (Li et al., arXiv:2102.02079) and Flower's tutorial.

    LeNet-style: conv(3->6, 5x5) -> pool -> conv(6->16, 5x5) -> pool -> 400 -> 120 -> 84
    -> classes. 62,006 parameters for 10 classes on 3x32x32 inputs.
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (N, 3, 32, 32)
        x = self.pool(torch.relu(self.conv1(x)))  # (N, 6, 14, 14)
        x = self.pool(torch.relu(self.conv2(x)))  # (N, 16, 5, 5)
        x = torch.flatten(x, 1)  # (N, 400)
        x = torch.relu(self.fc1(x))
        x = torch.relu(self.fc2(x))
        return self.fc3(x)


class DigitsCNN(nn.Module):
    """A small CNN for scikit-learn's 8x8 digits (1x8x8 inputs), ~12k parameters."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),  # (N, 16, 8, 8)
            nn.ReLU(),
            nn.MaxPool2d(2),  # (N, 16, 4, 4)
            nn.Conv2d(16, 32, 3, padding=1),  # (N, 32, 4, 4)
            nn.ReLU(),
            nn.MaxPool2d(2),  # (N, 32, 2, 2)
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def build_model(name: str, num_classes: int = 10, seed: int | None = None) -> nn.Module:
    """Build a model by its run-config name; ``seed`` fixes the initial weights."""
    builders = {"simple-cnn": SimpleCNN, "digits-cnn": DigitsCNN}
    if name not in builders:
        raise ValueError(f"unknown model {name!r}; known: {sorted(builders)}")
    if seed is None:
        return builders[name](num_classes)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return builders[name](num_classes)
