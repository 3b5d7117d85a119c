"""Heterogeneity and fairness maths on inputs small enough to check by hand."""

import math

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, MetricRecord, RecordDict

from fedfocal_app.config import ConfigError, parse_run_config
from fedfocal_app.data import Shard, local_splits, split_local_test
from fedfocal_app.heterogeneity import (
    UpdateTracker,
    fairness_record,
    fairness_summary,
    label_entropy,
    shard_statistics,
    total_variation,
    update_statistics,
    worst_fraction_mean,
)
from fedfocal_app.server_app import make_strategy

# --------------------------------------------------------------------------- shards


def test_entropy_by_hand():
    assert label_entropy(np.array([5, 5, 0, 0])) == pytest.approx(1.0)  # two equal classes
    assert label_entropy(np.array([7, 0, 0])) == 0.0  # one class
    assert label_entropy(np.ones(10)) == pytest.approx(math.log2(10))
    assert label_entropy(np.array([2, 1, 1])) == pytest.approx(1.5)  # ½·1 + ¼·2 + ¼·2
    rows = label_entropy(np.array([[5, 5], [3, 0]]))
    np.testing.assert_allclose(rows, [1.0, 0.0])


def test_total_variation_by_hand():
    assert total_variation([1, 0], [0.5, 0.5]) == pytest.approx(0.5)
    assert total_variation([1, 0], [0, 1]) == pytest.approx(1.0)  # disjoint labels
    assert total_variation([0.2, 0.8], [0.2, 0.8]) == 0.0
    # Earth mover's with 0/1 cost: move ½ of the mass from class 0 to class 2, cost ½.
    assert total_variation([0.5, 0.5, 0.0], [0.0, 0.5, 0.5]) == pytest.approx(0.5)
    np.testing.assert_allclose(total_variation([[1, 0], [0.5, 0.5]], [0.5, 0.5]), [0.5, 0.0])


def test_shard_statistics_by_hand():
    stats = shard_statistics(np.array([[2, 2], [4, 0]]))
    # Pooled: 6 of class 0, 2 of class 1 -> (0.75, 0.25); both clients are 0.25 away.
    np.testing.assert_allclose(stats["global_label_distribution"], [0.75, 0.25])
    assert [c["tv_distance"] for c in stats["clients"]] == pytest.approx([0.25, 0.25])
    assert [c["label_entropy_bits"] for c in stats["clients"]] == pytest.approx([1.0, 0.0])
    assert [c["num_examples"] for c in stats["clients"]] == [4, 4]
    assert stats["summary"]["classes_per_client_mean"] == 1.5
    assert stats["max_entropy_bits"] == 1.0


def test_empty_shard_has_no_distribution_but_stays_json():
    stats = shard_statistics(np.array([[2, 2], [0, 0]]))
    assert stats["clients"][1]["tv_distance"] is None
    assert stats["clients"][1]["label_entropy_bits"] is None
    assert stats["summary"]["tv_distance_mean"] == pytest.approx(0.0)


# --------------------------------------------------------------------------- updates


def test_cosine_by_hand():
    updates = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    stats = update_statistics(updates, updates.mean(axis=0))  # aggregate ∝ (1, 1)
    s = 1 / math.sqrt(2)
    assert stats["cosine_to_aggregate"] == pytest.approx([s, s, 1.0])
    assert stats["cosine_mean"] == pytest.approx((2 * s + 1) / 3)
    assert stats["cosine_min"] == pytest.approx(s)
    assert stats["norm"] == pytest.approx([1.0, 1.0, math.sqrt(2)])
    assert stats["aggregate_norm"] == pytest.approx(math.sqrt(8) / 3)


def test_opposite_and_zero_updates():
    stats = update_statistics(np.array([[2.0, 0.0], [-1.0, 0.0], [0.0, 0.0]]), np.array([1.0, 0.0]))
    assert stats["cosine_to_aggregate"] == pytest.approx([1.0, -1.0, 0.0])


def _record(**arrays):
    return ArrayRecord({k: Array(np.asarray(v)) for k, v in arrays.items()})


def _reply(**arrays):
    return RecordDict({"arrays": _record(**arrays), "metrics": MetricRecord({"num-examples": 1})})


def test_tracker_uses_previous_global_model():
    tracker = UpdateTracker()
    w0 = _record(w=np.array([1.0, 1.0], np.float32), steps=np.array([3]))  # int: skipped
    assert tracker.observe_global(w0) is None  # round 0: nothing to compare yet
    tracker.observe_clients(
        [
            _reply(w=np.array([2.0, 1.0], np.float32), steps=np.array([9])),
            _reply(w=np.array([1.0, 2.0], np.float32), steps=np.array([9])),
        ]
    )
    stats = tracker.observe_global(_record(w=np.array([1.5, 1.5], np.float32), steps=np.array([9])))
    s = 1 / math.sqrt(2)
    assert stats["cosine_to_aggregate"] == pytest.approx([s, s])
    assert stats["norm"] == pytest.approx([1.0, 1.0])
    # A round without client models (no valid reply) records nothing.
    assert tracker.observe_global(_record(w=np.array([1.5, 1.5], np.float32))) is None
    # A client model of the wrong size is left out, never fatal.
    tracker.observe_clients([_reply(w=np.array([1.0], np.float32)), _reply(w=np.ones(2))])
    stats = tracker.observe_global(_record(w=np.array([1.0, 1.0], np.float32)))
    assert stats["norm"] == pytest.approx([math.sqrt(0.5)])


# --------------------------------------------------------------------------- fairness


def test_fairness_summary_by_hand():
    summary = fairness_summary([0.9, 0.5, 0.7])
    assert summary["accuracy_mean"] == pytest.approx(0.7)
    assert summary["accuracy_std"] == pytest.approx(math.sqrt(0.08 / 3))  # population std
    assert summary["accuracy_worst"] == 0.5
    assert summary["accuracy_worst_10pct"] == 0.5  # 10% of 3 clients rounds up to one
    assert summary["num_clients"] == 3


@pytest.mark.parametrize("n, worst", [(10, 1), (20, 2), (30, 3), (31, 4)])
def test_worst_ten_percent_counts_clients(n, worst):
    values = np.arange(n, dtype=float)
    assert worst_fraction_mean(values) == pytest.approx(np.mean(np.arange(worst)))


def test_fairness_record_keeps_every_client():
    contents = [
        RecordDict({"m": MetricRecord({"num-examples": 5, "accuracy": a, "loss": 1.0})})
        for a in (0.2, 0.6)
    ]
    record = fairness_record(contents)
    assert [c["accuracy"] for c in record["clients"]] == [0.2, 0.6]
    assert record["accuracy_worst"] == 0.2 and record["accuracy_mean"] == pytest.approx(0.4)


# --------------------------------------------------------------------------- local test split


def _numbered_shard(n: int) -> Shard:
    # x holds each example's index, so the split can be checked row by row.
    return Shard(x=torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1), y=torch.arange(n) % 10)


def test_local_split_is_disjoint_covering_and_seeded():
    shard = _numbered_shard(526)
    train, test = split_local_test(shard, 0.1, seed=3)
    ids_train, ids_test = train.x.flatten().long(), test.x.flatten().long()
    assert len(test) == 53 and len(train) == 473  # ceil(52.6)
    assert sorted(torch.cat([ids_train, ids_test]).tolist()) == list(range(526))
    assert torch.equal(train.y, shard.y[ids_train])  # labels travel with their images
    again = split_local_test(shard, 0.1, seed=3)[1]
    other = split_local_test(shard, 0.1, seed=4)[1]
    assert torch.equal(again.x, test.x) and not torch.equal(other.x, test.x)


def test_smallest_shard_keeps_one_example_each_side():
    train, test = split_local_test(_numbered_shard(2), 0.1, seed=0)
    assert len(train) == len(test) == 1
    with pytest.raises(ConfigError, match="min-partition-size"):
        split_local_test(_numbered_shard(1), 0.1, seed=0)


def test_no_holdout_unless_fairness_eval(run_config):
    shard = _numbered_shard(100)
    train, test = local_splits(parse_run_config(run_config), shard, partition_id=0)
    assert train is shard and test is None  # default runs train on the whole shard
    cfg = parse_run_config({**run_config, "fairness-eval-every": 2})
    _, test0 = local_splits(cfg, shard, partition_id=0)
    _, test1 = local_splits(cfg, shard, partition_id=1)
    assert len(test0) == 10 and not torch.equal(test0.x, test1.x)  # one draw per client


def test_strategy_evaluates_every_k_rounds_only_with_fairness(run_config):
    off = make_strategy(parse_run_config(run_config))
    assert off.evaluate_every == 0 and off.fraction_evaluate == 0.0
    cfg = parse_run_config({**run_config, "fairness-eval-every": 3, "strategy": "fedprox"})
    on = make_strategy(cfg)
    assert on.evaluate_every == 3 and on.fraction_evaluate == 1.0 and on.min_evaluate_nodes == 1
