"""A node's data: on-disk shard cache (deployment), own data folder, memory (simulation)."""

import os

import pytest
import torch

from fedfocal_app import node_data
from fedfocal_app.config import ConfigError, parse_run_config
from fedfocal_app.data import load_shard
from fedfocal_app.node_data import cache_file, load_node_shard, shard_cache_key


def _refuse(*_args, **_kwargs):
    raise AssertionError("decoded again instead of reading the cache")


def test_second_load_reads_the_disk_cache(run_config, tmp_path, monkeypatch):
    cfg = parse_run_config(run_config)
    node = {"partition-id": 1, "num-partitions": 3, "cache-dir": str(tmp_path)}
    first = load_node_shard(cfg, node)
    files = list(tmp_path.glob("*.pt"))
    assert [f.name for f in files] == [cache_file(tmp_path, shard_cache_key(cfg, 1, 3)).name]
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write left no temp file

    # A fresh ClientApp process: no in-memory cache, and decoding would fail.
    monkeypatch.setattr(node_data, "_decode_partition", _refuse)
    monkeypatch.setattr(node_data, "load_shard", _refuse)
    again = load_node_shard(cfg, node)
    assert torch.equal(first.x, again.x) and torch.equal(first.y, again.y)
    assert torch.equal(again.y, load_shard(cfg, 1, 3).y)  # the same shard as simulation


@pytest.mark.parametrize(
    "change",
    [
        {"dataset": "cifar10", "data-dir": "PARQUET", "min-partition-size": 2},
        {"dirichlet-alpha": 0.1},
        {"min-partition-size": 11},
        {"seed": 7},
    ],
)
def test_cache_key_changes_with_every_parameter(run_config, tiny_cifar10, tmp_path, change):
    change = {k: str(tiny_cifar10) if v == "PARQUET" else v for k, v in change.items()}
    base = parse_run_config(run_config)
    other = parse_run_config({**run_config, **change})
    name = cache_file(tmp_path, shard_cache_key(base, 0, 3)).name
    assert cache_file(tmp_path, shard_cache_key(other, 0, 3)).name != name


def test_cache_key_changes_with_partition_and_data_dir(run_config, tiny_cifar10, tmp_path):
    cifar = {**run_config, "dataset": "cifar10", "min-partition-size": 2}
    cfg = parse_run_config(run_config)
    names = {
        cache_file(tmp_path, shard_cache_key(cfg, 0, 3)).name,
        cache_file(tmp_path, shard_cache_key(cfg, 1, 3)).name,  # partition id
        cache_file(tmp_path, shard_cache_key(cfg, 0, 4)).name,  # num-partitions
        cache_file(tmp_path, shard_cache_key(parse_run_config(cifar), 0, 3)).name,  # Hub
        cache_file(
            tmp_path,
            shard_cache_key(parse_run_config({**cifar, "data-dir": str(tiny_cifar10)}), 0, 3),
        ).name,  # local copy
    }
    assert len(names) == 5


def test_a_foreign_cache_file_is_rebuilt(run_config, tmp_path):
    cfg = parse_run_config(run_config)
    node = {"partition-id": 0, "num-partitions": 3, "cache-dir": str(tmp_path)}
    path = cache_file(tmp_path, shard_cache_key(cfg, 0, 3))
    path.write_bytes(b"not a torch file")
    shard = load_node_shard(cfg, node)
    assert torch.equal(shard.y, load_shard(cfg, 0, 3).y)
    assert torch.load(path, weights_only=True)["y"].shape == shard.y.shape  # rewritten


def test_without_cache_dir_nothing_is_written(run_config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = parse_run_config(run_config)
    shard = load_node_shard(cfg, {"partition-id": 0, "num-partitions": 3})  # simulation
    assert torch.equal(shard.y, load_shard(cfg, 0, 3).y)
    assert not list(tmp_path.rglob("*.pt"))


def test_node_with_its_own_data_folder(run_config, tiny_cifar10, tmp_path, monkeypatch):
    cfg = parse_run_config({**run_config, "dataset": "cifar10"})
    node = {"data-dir": str(tiny_cifar10), "cache-dir": str(tmp_path)}  # no partition-id
    shard = load_node_shard(cfg, node)
    assert len(shard) == 120 and shard.x.shape[1:] == (3, 32, 32)  # every train image
    assert shard.label_counts().tolist() == [12] * 10
    monkeypatch.setattr(node_data, "_decode_own", _refuse)
    assert torch.equal(load_node_shard(cfg, node).x, shard.x)  # from the cache
    # Without a cache folder: decoded in memory, same content.
    monkeypatch.undo()
    assert torch.equal(load_node_shard(cfg, {"data-dir": str(tiny_cifar10)}).y, shard.y)


def test_own_data_cache_follows_the_files(tiny_cifar10, tmp_path):
    before = node_data.own_data_cache_key(str(tiny_cifar10))
    train = next(tiny_cifar10.glob("train-*.parquet"))
    st = train.stat()
    os.utime(train, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    try:
        after = node_data.own_data_cache_key(str(tiny_cifar10))
        assert cache_file(tmp_path, before) != cache_file(tmp_path, after)
    finally:
        os.utime(train, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_node_config_errors_name_the_key(run_config, tmp_path):
    cfg = parse_run_config(run_config)
    with pytest.raises(ConfigError, match="'partition-id' is missing"):
        load_node_shard(cfg, {"num-partitions": 3})
    with pytest.raises(ConfigError, match="needs run config dataset = 'cifar10'"):
        load_node_shard(cfg, {"data-dir": str(tmp_path)})
    cifar = parse_run_config({**run_config, "dataset": "cifar10"})
    with pytest.raises(ConfigError, match="no train-\\*.parquet"):
        load_node_shard(cifar, {"data-dir": str(tmp_path)})
