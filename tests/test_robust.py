"""Bad replies are dropped with a reason; the aggregate equals the good replies' alone."""

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, MetricRecord, RecordDict
from replies import failed, from_content, reply
from test_strategy import NodeRegistry

from fedfocal_app.robust import NodeWaitTimeout, cap_shares, wait_for_nodes
from fedfocal_app.strategy import AppFedAvg, AppFedProx, FedFocal

RNG = np.random.default_rng(0)
SHAPES = {"w": (3, 2), "b": (2,)}


def arrays():
    return {k: RNG.normal(size=s).astype(np.float32) for k, s in SHAPES.items()}


def good(node, n, loss=0.5):
    return reply(node, arrays(), {"num-examples": n, "train_loss": loss / 2, "pre_train_loss": loss})


def metrics_ok(n=50):
    return {"num-examples": n, "train_loss": 0.3, "pre_train_loss": 0.6}


def bad_replies():
    """One reply per fault the issue lists, each with the reason we expect."""
    a = arrays()
    nan = {**a, "w": np.full((3, 2), np.nan, dtype=np.float32)}
    wrong_shape = {**a, "w": np.zeros((2, 3), dtype=np.float32)}
    wrong_dtype = {**a, "b": np.zeros(2, dtype=np.float64)}
    two_arrays = RecordDict(
        {
            "a1": ArrayRecord({k: Array(v) for k, v in a.items()}),
            "a2": ArrayRecord({k: Array(v) for k, v in a.items()}),
            "m": MetricRecord(metrics_ok()),
        }
    )
    no_metrics = RecordDict({"a": ArrayRecord({k: Array(v) for k, v in a.items()})})
    return [
        (reply(11, nan, metrics_ok()), "NaN or Inf"),
        (reply(12, wrong_shape, metrics_ok()), "array 'w' is float32[2, 3]"),
        (reply(13, wrong_dtype, metrics_ok()), "array 'b' is float64"),
        (reply(14, {"w": a["w"]}, metrics_ok()), "array keys differ"),
        (reply(15, a, {"num-examples": 50, "train_loss": 0.3}), "metric 'pre_train_loss' missing"),
        (reply(16, a, {**metrics_ok(), "pre_train_loss": float("inf")}), "not a finite number"),
        (reply(17, a, {**metrics_ok(), "num-examples": [1, 2]}), "metric 'num-examples' = [1, 2]"),
        (reply(18, a, {**metrics_ok(), "num-examples": 10**12}), "exceeds max-num-examples"),
        (reply(19, a, {**metrics_ok(), "num-examples": 0}), "not positive"),
        (from_content(20, two_arrays), "expected 1 ArrayRecord, got 2"),
        (from_content(21, no_metrics), "expected 1 MetricRecord, got 0"),
    ]


def configured(strategy, reference, nodes=(1, 2)):
    strategy.max_num_examples = 10**9
    strategy.begin_train_round(1, reference.content["arrays"], NodeRegistry(nodes))
    return strategy


@pytest.mark.parametrize("make", [lambda: FedFocal(aggregation_gamma=1.0), AppFedAvg, lambda: AppFedProx(proximal_mu=0.1)])
def test_bad_replies_are_dropped_and_result_equals_good_replies_alone(make):
    goods = [good(1, 40, 0.4), good(2, 60, 1.2)]
    bads = bad_replies()
    mixed = [goods[0], *[b for b, _ in bads], goods[1]]

    ref_strategy = configured(make(), goods[0])
    expected, expected_metrics = ref_strategy.aggregate_train(1, goods)

    strategy = configured(make(), goods[0])
    got, got_metrics = strategy.aggregate_train(1, mixed)
    for key in SHAPES:
        np.testing.assert_array_equal(got[key].numpy(), expected[key].numpy())
    assert dict(got_metrics) == dict(expected_metrics)
    report = strategy.round_report
    assert report["valid"] == 2
    reasons = {d["node"]: d["reason"] for d in report["dropped"]}
    for msg, reason in bads:
        assert reason in reasons[msg.metadata.src_node_id]


def test_client_error_is_counted_not_fatal():
    goods = [good(1, 40), good(2, 60)]
    strategy = configured(AppFedAvg(), goods[0])
    arrays_, _ = strategy.aggregate_train(1, [*goods, failed(3, "ClientApp raised RuntimeError")])
    assert arrays_ is not None and strategy.round_report["failed"] == 1


def test_too_few_valid_replies_keep_previous_model():
    strategy = configured(AppFedAvg(), good(1, 10))
    strategy.min_valid_replies = 2
    assert strategy.aggregate_train(1, [good(1, 10), bad_replies()[0][0]]) == (None, None)


def test_aggregation_ignores_arrival_order():
    replies = [good(i, 10 + 7 * i, 0.1 * i + 0.2) for i in range(1, 6)]
    a, _ = configured(FedFocal(), replies[0]).aggregate_train(1, replies)
    b, _ = configured(FedFocal(), replies[0]).aggregate_train(1, replies[::-1])
    for key in SHAPES:
        np.testing.assert_array_equal(a[key].numpy(), b[key].numpy())


def test_weight_cap_bounds_one_clients_share():
    replies = [good(1, 10), good(2, 10), good(3, 980)]
    strategy = configured(AppFedAvg(), replies[0])
    strategy.max_client_weight = 0.5
    got, _ = strategy.aggregate_train(1, replies)
    shares = [0.25, 0.25, 0.5]  # 98% capped to 50%, the rest shared 10:10
    expected = np.average([r.content["arrays"]["w"].numpy() for r in replies], axis=0, weights=shares)
    np.testing.assert_allclose(got["w"].numpy(), expected, rtol=1e-6)
    assert strategy.round_report["capped"] and strategy.round_report["shares"] == pytest.approx(shares)


def test_cap_shares_by_hand():
    np.testing.assert_allclose(cap_shares(np.array([1.0, 1.0, 8.0]), 0.5), [0.25, 0.25, 0.5])
    # two clients over the cap: both clipped, the third gets the rest
    np.testing.assert_allclose(cap_shares(np.array([45.0, 45.0, 10.0]), 0.4), [0.4, 0.4, 0.2])
    # a cap below 1/K becomes 1/K: equal shares
    np.testing.assert_allclose(cap_shares(np.array([1.0, 3.0]), 0.2), [0.5, 0.5])
    w = np.array([3.0, 4.0])
    assert cap_shares(w, 0.6) is w  # not binding: returned untouched
    with pytest.raises(ValueError):
        cap_shares(np.array([-1.0, 2.0]), 0.5)


def test_wait_for_nodes_times_out_with_clear_error():
    with pytest.raises(NodeWaitTimeout, match="only 1 of the 3 SuperNodes required"):
        wait_for_nodes(NodeRegistry([7]), 3, timeout=0.2, poll=0.05)
    assert wait_for_nodes(NodeRegistry([1, 2, 3]), 3, timeout=0.2) == [1, 2, 3]


def test_malformed_evaluate_reply_is_dropped():
    strategy = AppFedAvg()
    ok = from_content(1, RecordDict({"m": MetricRecord({"num-examples": 10, "accuracy": 0.5})}))
    bad = from_content(2, RecordDict({"m": MetricRecord({"accuracy": 0.9})}))
    agg = strategy.aggregate_evaluate(1, [ok, bad])
    assert agg["accuracy"] == pytest.approx(0.5)


def test_focal_state_round_trips():
    s = FedFocal(seed=3)
    s.client_losses = {5: 1.5, 9: 0.2}
    s.rng.random()
    t = FedFocal(seed=99)
    t.load_state_dict(s.state_dict())
    assert t.client_losses == s.client_losses and t.rng.random() == s.rng.random()
