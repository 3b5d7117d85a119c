"""Shared fixtures: a tiny CIFAR-10 parquet in the Hub's schema, the default config."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))  # tests/flower_harness.py

from flower_harness import PROJECT_ROOT, simulation_superlink  # noqa: E402

CIFAR10_NAMES = [
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
]  # fmt: skip


def default_run_config() -> dict:
    """The app's defaults, exactly as pyproject.toml states them."""
    with open(PROJECT_ROOT / "pyproject.toml", "rb") as fh:
        return dict(tomllib.load(fh)["tool"]["flwr"]["app"]["config"])


@pytest.fixture
def run_config() -> dict:
    return default_run_config()


def write_tiny_cifar10(folder: Path, per_class_train: int = 12, per_class_test: int = 4) -> Path:
    """Parquet files in the `uoft-cs/cifar10` schema (img: Image, label: ClassLabel).

    Each class has its own mean colour plus noise, so a model can learn something.
    Images are stored as PNG bytes, as the Hub's parquet stores them.
    """
    rng = np.random.default_rng(0)
    features = datasets.Features(
        {"img": datasets.Image(), "label": datasets.ClassLabel(names=CIFAR10_NAMES)}
    )
    folder.mkdir(parents=True, exist_ok=True)
    for split, per_class in (("train", per_class_train), ("test", per_class_test)):
        images, labels = [], []
        for label in range(10):
            colour = rng.integers(0, 256, size=3)
            for _ in range(per_class):
                pixels = np.clip(colour + rng.normal(0, 30, (32, 32, 3)), 0, 255)
                images.append(Image.fromarray(pixels.astype(np.uint8)))
                labels.append(label)
        order = rng.permutation(len(labels))
        ds = datasets.Dataset.from_dict(
            {"img": [images[i] for i in order], "label": [labels[i] for i in order]},
            features=features,
        )
        ds.to_parquet(str(folder / f"{split}-00000-of-00001.parquet"))
    return folder


@pytest.fixture(scope="session")
def tiny_cifar10(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_cifar10(tmp_path_factory.mktemp("cifar10"))


@pytest.fixture(scope="module")
def superlink(tmp_path_factory: pytest.TempPathFactory):
    """One simulation SuperLink per test module, stopped by PID when the module ends."""
    with simulation_superlink(tmp_path_factory.mktemp("superlink")) as link:
        yield link
