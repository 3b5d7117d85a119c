"""A node's training data: its own folder, a Dirichlet shard, and an on-disk cache.

In simulation a ClientApp lives for the whole run, so ``data.load_shard``'s in-memory
cache decodes each shard once. In deployment every message starts a fresh
``flwr-clientapp`` process: without a disk cache a SuperNode would partition and
decode its shard again every round. The node config (free-form keys, set with
``flower-supernode --node-config``) says what this node has:

- ``partition-id``, ``num-partitions``: shard ``i`` of ``N`` of the run's dataset
  (``DirichletPartitioner`` with the run's ``dirichlet-alpha``, ``min-partition-size``,
  ``seed``); the simulation engine sets these two.
- ``data-dir``: the node's OWN folder of ``train-*.parquet`` files in the
  ``uoft-cs/cifar10`` schema (``img``, ``label``), used whole instead of a shard (a
  real institution has its own files); needs ``dataset = 'cifar10'`` in the run.
- ``cache-dir``: folder for decoded shards (float32 tensors, ``torch.save``). Absent
  or ``""``: memory only (what simulation needs). ``deploy/federation.py supernode``
  sets it to ``~/.cache/fedfocal`` unless told otherwise.

A cache file is named by a hash of everything that determines its content (format
version, dataset, data folder, partitioning parameters, partition id; for own data the
files' names, sizes and modification times), stores that key, and is written
atomically, so concurrent nodes sharing a folder and crashes leave no half file.
"""

from __future__ import annotations

import functools
import glob
import hashlib
import io
import json
import os
from collections.abc import Callable, Mapping
from logging import INFO, WARNING
from pathlib import Path
from typing import Any

import torch
from flwr.supercore import log

from .config import ConfigError, RunConfig
from .data import Shard, _decode_cifar, load_shard
from .outputs import atomic_write_bytes

# Bump when decoding or normalisation changes: old cache files then stop matching.
CACHE_FORMAT = 1


# --------------------------------------------------------------------------- keys


def _abs(path: str) -> str:
    return os.path.abspath(os.path.expanduser(path)) if path else ""


def shard_cache_key(cfg: RunConfig, partition_id: int, num_partitions: int) -> dict[str, Any]:
    """Everything that determines the content of Dirichlet shard ``partition_id``."""
    return {
        "format": CACHE_FORMAT,
        "dataset": cfg.dataset,
        "data-dir": _abs(cfg.data_dir),
        "num-partitions": num_partitions,
        "dirichlet-alpha": cfg.dirichlet_alpha,
        "min-partition-size": cfg.min_partition_size,
        "seed": cfg.seed,
        "partition-id": partition_id,
    }


def own_data_files(data_dir: str) -> list[str]:
    """The node's ``train-*.parquet`` files (sorted); ConfigError when there are none."""
    folder = _abs(data_dir)
    files = sorted(glob.glob(os.path.join(folder, "train-*.parquet")))
    if not files:
        raise ConfigError(
            f"node config 'data-dir' = {data_dir!r} is invalid: no train-*.parquet in "
            f"{folder} (expected the 'uoft-cs/cifar10' parquet schema: img, label)"
        )
    return files


def own_data_cache_key(data_dir: str) -> dict[str, Any]:
    """Key of a node's own folder: its files' names, sizes and modification times,
    so replacing or adding a file invalidates the cache."""
    files = []
    for f in own_data_files(data_dir):
        st = os.stat(f)
        files.append([os.path.basename(f), st.st_size, st.st_mtime_ns])
    return {"format": CACHE_FORMAT, "dataset": "own-cifar10", "data-dir": _abs(data_dir), "files": files}


def cache_file(cache_dir: Path, key: Mapping[str, Any]) -> Path:
    """``cache_dir/<dataset>[-p<i>of<N>]-<sha256(key)[:16]>.pt``."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    part = f"-p{key['partition-id']}of{key['num-partitions']}" if "partition-id" in key else ""
    return Path(cache_dir) / f"{key['dataset']}{part}-{digest}.pt"


# --------------------------------------------------------------------------- decoding


def _decode_partition(cfg: RunConfig, partition_id: int, num_partitions: int) -> Shard:
    """Partition and decode (slow: a Dirichlet draw over the set, image decoding)."""
    return load_shard(cfg, partition_id, num_partitions)


def _decode_own(data_dir: str) -> Shard:
    """Decode every ``train-*.parquet`` of the node's own folder."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = [pq.read_table(f) for f in own_data_files(data_dir)]
    # Hub parquet files carry their `datasets` features (img: Image) in the schema
    # metadata, so the Dataset decodes `img` to PIL images as FederatedDataset would.
    ds = datasets.Dataset(pa.concat_tables(tables))
    missing = {"img", "label"} - set(ds.column_names)
    if missing:
        raise ConfigError(
            f"node config 'data-dir' = {data_dir!r} is invalid: columns {sorted(missing)} "
            f"missing (found {ds.column_names}; expected the 'uoft-cs/cifar10' schema)"
        )
    return _decode_cifar(ds)


@functools.lru_cache(maxsize=4)
def _own_in_memory(key_json: str, data_dir: str) -> Shard:
    # Keyed by the file signature too, so a changed folder is read again.
    return _decode_own(data_dir)


# --------------------------------------------------------------------------- cache


def _read_cache(path: Path, key: Mapping[str, Any]) -> Shard | None:
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        return None
    except Exception as err:  # truncated by a full disk, foreign file: rebuild it
        log(WARNING, "fedfocal: ignoring unreadable cache file %s (%s)", path, err)
        return None
    if blob.get("key") != json.dumps(key, sort_keys=True):
        log(WARNING, "fedfocal: cache file %s holds another shard; rebuilding", path)
        return None
    return Shard(x=blob["x"], y=blob["y"])


def cached_shard(cache_dir: Path, key: Mapping[str, Any], build: Callable[[], Shard]) -> Shard:
    """The shard stored under ``key`` in ``cache_dir``, or ``build()`` it and store it."""
    path = cache_file(cache_dir, key)
    shard = _read_cache(path, key)
    if shard is not None:
        log(INFO, "fedfocal: shard from cache %s (%d examples)", path, len(shard))
        return shard
    shard = build()
    buffer = io.BytesIO()
    torch.save({"key": json.dumps(key, sort_keys=True), "x": shard.x, "y": shard.y}, buffer)
    atomic_write_bytes(path, buffer.getvalue())
    log(INFO, "fedfocal: decoded shard cached at %s (%d examples)", path, len(shard))
    return shard


# --------------------------------------------------------------------------- public


def _node_int(node_config: Mapping[str, Any], key: str) -> int:
    if key not in node_config:
        raise ConfigError(
            f"node config '{key}' is missing: start the SuperNode with --node-config "
            "\"partition-id=I num-partitions=N\" (a shard of the run's dataset) or "
            "\"data-dir='/path/to/own/parquet'\" (its own data)"
        )
    value = node_config[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise ConfigError(f"node config '{key}' = {value!r} is invalid: must be an integer")
    return int(value)


def load_node_shard(cfg: RunConfig, node_config: Mapping[str, Any]) -> Shard:
    """This node's decoded training data: own folder or Dirichlet shard, cached.

    Parameters
    ----------
    cfg
        The validated run config (dataset, partitioning parameters).
    node_config
        The SuperNode's node config: ``data-dir`` (own data) or ``partition-id`` and
        ``num-partitions``; optional ``cache-dir`` (see the module docstring).
    """
    own_dir = str(node_config.get("data-dir", "") or "")
    cache_dir = str(node_config.get("cache-dir", "") or "")
    if own_dir:
        if cfg.dataset != "cifar10":
            raise ConfigError(
                f"node config 'data-dir' = {own_dir!r} needs run config dataset = "
                f"'cifar10' (a node's own data is in the uoft-cs/cifar10 schema); the "
                f"run has dataset = {cfg.dataset!r}"
            )
        key = own_data_cache_key(own_dir)
        if not cache_dir:
            return _own_in_memory(json.dumps(key, sort_keys=True), own_dir)
        return cached_shard(Path(cache_dir).expanduser(), key, lambda: _decode_own(own_dir))

    partition_id = _node_int(node_config, "partition-id")
    num_partitions = _node_int(node_config, "num-partitions")
    if not cache_dir:
        return _decode_partition(cfg, partition_id, num_partitions)  # in-memory cache
    key = shard_cache_key(cfg, partition_id, num_partitions)
    return cached_shard(
        Path(cache_dir).expanduser(),
        key,
        lambda: _decode_partition(cfg, partition_id, num_partitions),
    )
