"""Run configuration: parse and validate Flower's run config once, pass typed values on.

Every default lives in ``[tool.flwr.app.config]`` of ``pyproject.toml``; this module
holds none. A bad value fails here, before any data is loaded or any model trained,
with one message naming the key, the value and what is allowed.
"""

from __future__ import annotations

import glob
import math
import os
from dataclasses import asdict, dataclass
from typing import Any

STRATEGIES = ("fedfocal", "fedavg", "fedprox")
LOSSES = ("focal", "ce")
FOCAL_ALPHAS = ("none", "balanced")
SAMPLINGS = ("uniform", "focal")
DATASETS = ("digits", "cifar10")
MODELS = ("auto", "simple-cnn", "digits-cnn")
AUGMENTS = ("none", "crop-flip")


class ConfigError(ValueError):
    """A run config value is invalid; the message names key, value and what is allowed."""


@dataclass(frozen=True)
class RunConfig:
    """The validated run config; field names are the kebab-case keys in snake_case."""

    num_server_rounds: int
    fraction_train: float
    min_available_nodes: int
    round_timeout: float
    node_wait_timeout: float
    max_client_weight: float
    min_valid_replies: int
    max_num_examples: int
    resume_from: str
    local_epochs: int
    batch_size: int
    learning_rate: float
    momentum: float
    weight_decay: float
    augment: str
    strategy: str
    loss: str
    focal_gamma: float
    focal_alpha: str
    aggregation_gamma: float
    sampling: str
    focal_sampling_mix: float
    proximal_mu: float
    dataset: str
    data_dir: str
    dirichlet_alpha: float
    min_partition_size: int
    seed: int
    model: str
    output_dir: str
    run_name: str
    # Heterogeneity and fairness report (fedfocal_app.heterogeneity).
    shard_stats: bool
    fairness_eval_every: int
    local_test_fraction: float

    def to_dict(self) -> dict[str, Any]:
        """Return the config with its original kebab-case keys (as in pyproject)."""
        return {k.replace("_", "-"): v for k, v in asdict(self).items()}

    @property
    def resolved_model(self) -> str:
        """The model name with ``auto`` resolved from the dataset."""
        if self.model != "auto":
            return self.model
        return "simple-cnn" if self.dataset == "cifar10" else "digits-cnn"


def _fail(key: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(f"run config '{key}' = {value!r} is invalid: {allowed}")


def _get(raw: dict[str, Any], key: str) -> Any:
    if key not in raw:
        raise ConfigError(
            f"run config key '{key}' is missing: add it to [tool.flwr.app.config]"
        )
    return raw[key]


def _int(raw: dict[str, Any], key: str, minimum: int) -> int:
    value = _get(raw, key)
    # TOML gives ints; a float such as 3.0 is accepted, 3.5 or "3" is not.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(key, value, f"must be an integer >= {minimum}")
    if isinstance(value, float) and not value.is_integer():
        raise _fail(key, value, f"must be an integer >= {minimum}")
    if value < minimum:
        raise _fail(key, value, f"must be an integer >= {minimum}")
    return int(value)


def _float(
    raw: dict[str, Any],
    key: str,
    low: float,
    high: float = math.inf,
    low_open: bool = False,
) -> float:
    value = _get(raw, key)
    bracket = "(" if low_open else "["
    rng = f"{bracket}{low}, {high if math.isfinite(high) else 'inf'}" + (
        "]" if math.isfinite(high) else ")"
    )
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(key, value, f"must be a number in {rng}")
    value = float(value)
    if (
        not math.isfinite(value)
        or value > high
        or value < low
        or (low_open and value == low)
    ):
        raise _fail(key, value, f"must be a number in {rng}")
    return value


def _choice(raw: dict[str, Any], key: str, choices: tuple[str, ...]) -> str:
    value = _get(raw, key)
    if value not in choices:
        raise _fail(key, value, "must be one of " + " | ".join(repr(c) for c in choices))
    return str(value)


def _bool(raw: dict[str, Any], key: str) -> bool:
    value = _get(raw, key)
    if not isinstance(value, bool):
        raise _fail(key, value, "must be true or false")
    return value


def _str(raw: dict[str, Any], key: str) -> str:
    value = _get(raw, key)
    if not isinstance(value, str):
        raise _fail(key, value, "must be a string")
    return value


def parquet_files(data_dir: str) -> dict[str, str]:
    """Return ``{"train": ..., "test": ...}`` glob patterns of a ``data-dir``.

    Raises ConfigError when the folder or either split's files are missing.
    """
    folder = os.path.abspath(os.path.expanduser(data_dir))
    if not os.path.isdir(folder):
        raise _fail("data-dir", data_dir, f"folder {folder} does not exist")
    files = {}
    for split in ("train", "test"):
        pattern = os.path.join(folder, f"{split}-*.parquet")
        if not glob.glob(pattern):
            raise _fail(
                "data-dir",
                data_dir,
                f"no {split}-*.parquet in {folder} (expected the Hugging Face "
                "'uoft-cs/cifar10' parquet layout: train-*.parquet and test-*.parquet)",
            )
        files[split] = pattern
    return files


def parse_run_config(raw: dict[str, Any]) -> RunConfig:
    """Validate Flower's run config dict and return a typed :class:`RunConfig`.

    Raises
    ------
    ConfigError
        On the first invalid value, naming key, value and what is allowed.
    """
    cfg = RunConfig(
        num_server_rounds=_int(raw, "num-server-rounds", 1),
        fraction_train=_float(raw, "fraction-train", 0.0, 1.0, low_open=True),
        min_available_nodes=_int(raw, "min-available-nodes", 1),
        round_timeout=_float(raw, "round-timeout", 0.0, low_open=True),
        node_wait_timeout=_float(raw, "node-wait-timeout", 0.0, low_open=True),
        max_client_weight=_float(raw, "max-client-weight", 0.0, 1.0, low_open=True),
        min_valid_replies=_int(raw, "min-valid-replies", 1),
        max_num_examples=_int(raw, "max-num-examples", 1),
        resume_from=_str(raw, "resume-from"),
        local_epochs=_int(raw, "local-epochs", 1),
        batch_size=_int(raw, "batch-size", 1),
        learning_rate=_float(raw, "learning-rate", 0.0, low_open=True),
        momentum=_float(raw, "momentum", 0.0, 1.0),
        weight_decay=_float(raw, "weight-decay", 0.0),
        augment=_choice(raw, "augment", AUGMENTS),
        strategy=_choice(raw, "strategy", STRATEGIES),
        loss=_choice(raw, "loss", LOSSES),
        focal_gamma=_float(raw, "focal-gamma", 0.0),
        focal_alpha=_choice(raw, "focal-alpha", FOCAL_ALPHAS),
        aggregation_gamma=_float(raw, "aggregation-gamma", 0.0),
        sampling=_choice(raw, "sampling", SAMPLINGS),
        focal_sampling_mix=_float(raw, "focal-sampling-mix", 0.0, 1.0),
        proximal_mu=_float(raw, "proximal-mu", 0.0),
        dataset=_choice(raw, "dataset", DATASETS),
        data_dir=_str(raw, "data-dir"),
        dirichlet_alpha=_float(raw, "dirichlet-alpha", 0.0, low_open=True),
        min_partition_size=_int(raw, "min-partition-size", 0),
        seed=_int(raw, "seed", 0),
        model=_choice(raw, "model", MODELS),
        output_dir=_str(raw, "output-dir"),
        run_name=_str(raw, "run-name"),
        shard_stats=_bool(raw, "shard-stats"),
        fairness_eval_every=_int(raw, "fairness-eval-every", 0),
        local_test_fraction=_float(raw, "local-test-fraction", 0.0, 1.0, low_open=True),
    )
    if cfg.data_dir:
        if cfg.dataset != "cifar10":
            raise _fail(
                "data-dir",
                cfg.data_dir,
                f"is only used with dataset = 'cifar10' (dataset is {cfg.dataset!r}); "
                "leave it empty",
            )
        parquet_files(cfg.data_dir)
    expected_model = "simple-cnn" if cfg.dataset == "cifar10" else "digits-cnn"
    if cfg.model not in ("auto", expected_model):
        raise _fail(
            "model",
            cfg.model,
            f"dataset {cfg.dataset!r} needs {expected_model!r} (or 'auto')",
        )
    if not cfg.output_dir.strip():
        raise _fail("output-dir", cfg.output_dir, "must name a folder")
    if cfg.fairness_eval_every > cfg.num_server_rounds:
        raise _fail(
            "fairness-eval-every",
            cfg.fairness_eval_every,
            f"must be 0 (off) or at most num-server-rounds = {cfg.num_server_rounds}, "
            "else no round is ever evaluated",
        )
    if cfg.local_test_fraction >= 1.0:
        raise _fail(
            "local-test-fraction",
            cfg.local_test_fraction,
            "must be a number in (0.0, 1.0): clients keep the rest for training",
        )
    if cfg.fairness_eval_every and cfg.min_partition_size < 2:
        raise _fail(
            "min-partition-size",
            cfg.min_partition_size,
            "must be >= 2 when fairness-eval-every > 0: every shard gives at least one "
            "example to its local test split and keeps at least one for training",
        )
    if cfg.run_name and (os.sep in cfg.run_name or cfg.run_name in (".", "..")):
        raise _fail("run-name", cfg.run_name, "must be a plain folder name (no '/')")
    return cfg


def check_partitioning(cfg: RunConfig, num_partitions: int, num_examples: int) -> None:
    """Fail clearly when the training set cannot be split as asked.

    DirichletPartitioner needs every shard to reach ``min-partition-size``; with more
    partitions than examples (or than examples / min size) it can never succeed.
    """
    if num_partitions < 1:
        raise ConfigError(
            f"node config 'num-partitions' = {num_partitions} is invalid: must be >= 1"
        )
    if num_partitions > num_examples:
        raise ConfigError(
            f"node config 'num-partitions' = {num_partitions} is invalid: the "
            f"{cfg.dataset} training set has only {num_examples} examples; use at most "
            f"{num_examples} partitions"
        )
    if num_partitions * cfg.min_partition_size > num_examples:
        raise _fail(
            "min-partition-size",
            cfg.min_partition_size,
            f"{num_partitions} partitions x {cfg.min_partition_size} examples exceeds "
            f"the {num_examples} training examples of {cfg.dataset}; lower it to at "
            f"most {num_examples // num_partitions}",
        )
