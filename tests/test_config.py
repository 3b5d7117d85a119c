"""Run config validation: each bad value gives one clear error naming key and value."""

import pytest

from fedfocal_app.config import ConfigError, check_partitioning, parse_run_config


def test_defaults_parse(run_config):
    cfg = parse_run_config(run_config)
    assert cfg.dataset == "digits" and cfg.resolved_model == "digits-cnn"
    assert cfg.to_dict() == run_config


@pytest.mark.parametrize(
    "key, value",
    [
        ("focal-gamma", -0.5),
        ("aggregation-gamma", -1),
        ("dirichlet-alpha", 0.0),
        ("dirichlet-alpha", -2.0),
        ("strategy", "fedadam"),
        ("loss", "mse"),
        ("dataset", "mnist"),
        ("focal-alpha", "inverse"),
        ("sampling", "greedy"),
        ("num-server-rounds", 0),
        ("num-server-rounds", 2.5),
        ("local-epochs", "3"),
        ("fraction-train", 0.0),
        ("fraction-train", 1.5),
        ("learning-rate", 0.0),
        ("momentum", 1.2),
        ("focal-sampling-mix", -0.1),
        ("proximal-mu", float("nan")),
        ("batch-size", True),
        ("model", "resnet18"),
        ("model", "simple-cnn"),  # needs 3x32x32 inputs; digits are 1x8x8
        ("output-dir", ""),
        ("run-name", "a/b"),
    ],
)
def test_bad_value_names_key_and_value(run_config, key, value):
    run_config[key] = value
    with pytest.raises(ConfigError) as err:
        parse_run_config(run_config)
    message = str(err.value)
    assert f"'{key}'" in message and repr(value) in message


def test_missing_key_is_named(run_config):
    del run_config["focal-gamma"]
    with pytest.raises(ConfigError, match="'focal-gamma' is missing"):
        parse_run_config(run_config)


def test_data_dir_without_files(run_config, tmp_path):
    run_config.update({"dataset": "cifar10", "data-dir": str(tmp_path)})
    with pytest.raises(ConfigError, match="no train-\\*.parquet"):
        parse_run_config(run_config)
    run_config["data-dir"] = str(tmp_path / "missing")
    with pytest.raises(ConfigError, match="does not exist"):
        parse_run_config(run_config)


def test_data_dir_with_digits_is_refused(run_config, tiny_cifar10):
    run_config["data-dir"] = str(tiny_cifar10)
    with pytest.raises(ConfigError, match="only used with dataset = 'cifar10'"):
        parse_run_config(run_config)


def test_data_dir_with_files_is_accepted(run_config, tiny_cifar10):
    run_config.update({"dataset": "cifar10", "data-dir": str(tiny_cifar10)})
    assert parse_run_config(run_config).resolved_model == "simple-cnn"


def test_more_partitions_than_examples(run_config):
    cfg = parse_run_config(run_config)
    with pytest.raises(ConfigError, match="num-partitions' = 2000"):
        check_partitioning(cfg, 2000, 1437)
    with pytest.raises(ConfigError, match="'min-partition-size' = 10"):
        check_partitioning(cfg, 200, 1437)
    check_partitioning(cfg, 100, 1437)


@pytest.mark.parametrize(
    "key, value",
    [
        ("shard-stats", "yes"),
        ("shard-stats", 1),
        ("fairness-eval-every", -1),
        ("fairness-eval-every", 1.5),
        ("fairness-eval-every", 11),  # more than num-server-rounds = 10: never evaluates
        ("local-test-fraction", 0.0),
        ("local-test-fraction", 1.0),
        ("local-test-fraction", "0.1"),
    ],
)
def test_bad_report_value_names_key_and_value(run_config, key, value):
    run_config[key] = value
    with pytest.raises(ConfigError) as err:
        parse_run_config(run_config)
    assert f"'{key}'" in str(err.value) and repr(value) in str(err.value)


def test_fairness_eval_needs_two_examples_per_shard(run_config):
    run_config.update({"fairness-eval-every": 1, "min-partition-size": 1})
    with pytest.raises(ConfigError, match="'min-partition-size' = 1 .*local test split"):
        parse_run_config(run_config)
    run_config["min-partition-size"] = 2
    assert parse_run_config(run_config).fairness_eval_every == 1
