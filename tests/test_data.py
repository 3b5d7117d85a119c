"""Dirichlet shards through flwr-datasets: disjoint, covering, seeded, skew grows as alpha falls."""

import numpy as np
import pytest

from fedfocal_app.config import ConfigError, parse_run_config
from fedfocal_app.data import load_shard, load_test_set, partitioner_for


def _indices(cfg, n):
    part = partitioner_for(cfg, n)
    part.load_partition(0)  # triggers the Dirichlet draw
    # flwr-datasets keeps the drawn row indices privately; reading them is the only
    # way to check disjointness and coverage without adding a column to the data.
    return [np.array(part._partition_id_to_indices[i]) for i in range(n)]


def test_partitions_are_disjoint_and_cover_the_set(run_config):
    cfg = parse_run_config(run_config)
    parts = _indices(cfg, 10)
    union = np.concatenate(parts)
    assert len(union) == len(set(union.tolist())) == partitioner_for(cfg, 10).dataset.num_rows
    assert min(len(p) for p in parts) >= cfg.min_partition_size


def test_partitions_are_reproducible_by_seed(run_config):
    a = _indices(parse_run_config(run_config), 5)
    b = _indices(parse_run_config({**run_config, "min-partition-size": 11}), 5)  # new draw
    again = _indices(parse_run_config(run_config), 5)
    other_seed = _indices(parse_run_config({**run_config, "seed": 7}), 5)
    assert all(np.array_equal(x, y) for x, y in zip(a, again))
    assert not all(np.array_equal(x, y) for x, y in zip(a, other_seed))
    assert sum(len(x) for x in b) == sum(len(x) for x in a)


def _mean_label_entropy(cfg, n):
    entropies = []
    for i in range(n):
        counts = load_shard(cfg, i, n).label_counts()
        p = counts[counts > 0] / counts.sum()
        entropies.append(-(p * np.log(p)).sum())
    return float(np.mean(entropies))


def test_smaller_alpha_means_more_skew(run_config):
    skews = [
        _mean_label_entropy(parse_run_config({**run_config, "dirichlet-alpha": a}), 10)
        for a in (0.1, 1.0, 100.0)
    ]
    assert skews[0] < skews[1] < skews[2]
    assert skews[2] > 0.95 * np.log(10)  # alpha = 100 is close to IID


def test_digits_shapes_and_test_split(run_config):
    cfg = parse_run_config(run_config)
    shard = load_shard(cfg, 0, 4)
    assert shard.x.shape[1:] == (1, 8, 8) and shard.x.dtype.is_floating_point
    test = load_test_set(cfg)
    assert len(test) == 360 and set(test.y.tolist()) == set(range(10))


def test_partition_id_out_of_range(run_config):
    with pytest.raises(ConfigError, match="partition-id"):
        load_shard(parse_run_config(run_config), 4, 4)


def test_cifar10_path_from_local_parquet(run_config, tiny_cifar10):
    cfg = parse_run_config(
        {**run_config, "dataset": "cifar10", "data-dir": str(tiny_cifar10), "min-partition-size": 2}
    )
    shards = [load_shard(cfg, i, 3) for i in range(3)]
    assert sum(len(s) for s in shards) == 120
    assert shards[0].x.shape[1:] == (3, 32, 32)
    assert abs(float(shards[0].x.mean())) < 3  # normalised
    test = load_test_set(cfg)
    assert len(test) == 40 and test.label_counts().tolist() == [4] * 10
