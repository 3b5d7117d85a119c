"""The FedFocal weight rule by hand, against numpy, and against Flower's FedAvg."""

import math

import numpy as np
import pytest
from flwr.serverapp.strategy import FedAvg
from replies import reply

from fedfocal_app.strategy import (
    FedFocal,
    focal_client_weights,
    focal_factors,
    focal_sampling_probabilities,
)


def test_weights_by_hand():
    # n = (10, 30), L = (ln 2, ln 4): 1 - e^-L = (1/2, 3/4); gamma_s = 2 -> (1/4, 9/16)
    w = focal_client_weights([10, 30], [math.log(2), math.log(4)], gamma_s=2.0)
    np.testing.assert_allclose(w, [10 * 0.25, 30 * 9 / 16])


def test_gamma_zero_weights_are_num_examples():
    np.testing.assert_array_equal(focal_client_weights([5, 7], [0.1, 3.0], 0.0), [5.0, 7.0])


def test_higher_loss_gets_more_weight():
    w = focal_client_weights([100, 100], [0.05, 2.0], gamma_s=1.0)
    assert w[1] > 10 * w[0]


def test_all_zero_losses_fall_back_to_num_examples():
    np.testing.assert_array_equal(focal_client_weights([2, 3], [0.0, 0.0], 1.0), [2.0, 3.0])


def test_unseen_client_is_hardest():
    assert focal_factors([np.inf], 3.0)[0] == 1.0


@pytest.mark.parametrize(
    "losses, gamma", [([-0.1], 1.0), ([float("nan")], 1.0), ([1.0], -1.0)]
)
def test_bad_inputs_raise(losses, gamma):
    with pytest.raises(ValueError):
        focal_factors(losses, gamma)


def test_sampling_probabilities_by_hand():
    # f = (1/2, 1) for L = (ln 2, inf), gamma_s = 1; mix 0.5 over K = 2 clients
    p = focal_sampling_probabilities([math.log(2), np.inf], 1.0, mix=0.5)
    np.testing.assert_allclose(p, [0.5 * (1 / 3) + 0.25, 0.5 * (2 / 3) + 0.25])
    assert p.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(focal_sampling_probabilities([0.1, 5.0], 2.0, 1.0), [0.5, 0.5])


class NodeRegistry:
    """Stands in for the Grid's node registry: the strategy only asks for node ids."""

    def __init__(self, nodes=(1, 2, 3)):
        self.nodes = list(nodes)

    def get_node_ids(self):
        return self.nodes


def sent(strategy, replies, server_round=1):
    """Put ``strategy`` in the state configure_train leaves: it 'sent' these arrays."""
    reference = replies[0].content["arrays"]
    strategy.begin_train_round(server_round, reference, NodeRegistry())
    return strategy


def _replies():
    rng = np.random.default_rng(0)
    specs = [(1, 10, 0.2), (2, 30, 1.5), (3, 60, 0.7)]  # node, n_k, L_k
    return [
        reply(
            node,
            {"w": rng.normal(size=(3, 2)).astype(np.float32), "b": rng.normal(size=2).astype(np.float32)},
            {"num-examples": n, "pre_train_loss": loss, "train_loss": loss / 2},
        )
        for node, n, loss in specs
    ], specs


def test_aggregate_matches_numpy_reference():
    replies, specs = _replies()
    arrays, metrics = sent(FedFocal(aggregation_gamma=2.0), replies).aggregate_train(1, replies)
    weights = [n * (1 - math.exp(-loss)) ** 2 for _, n, loss in specs]
    for key in ("w", "b"):
        expected = np.average(
            [r.content["arrays"][key].numpy() for r in replies], axis=0, weights=weights
        )
        np.testing.assert_allclose(arrays[key].numpy(), expected, rtol=1e-6)
    # Train metrics stay weighted by num-examples, as in FedAvg.
    n = np.array([s[1] for s in specs])
    assert metrics["pre_train_loss"] == pytest.approx(np.average([s[2] for s in specs], weights=n))


def test_gamma_zero_equals_fedavg_exactly():
    replies, _ = _replies()
    ours, ours_metrics = sent(FedFocal(aggregation_gamma=0.0), replies).aggregate_train(1, replies)
    theirs, theirs_metrics = FedAvg().aggregate_train(1, replies)
    for key in theirs.keys():
        np.testing.assert_array_equal(ours[key].numpy(), theirs[key].numpy())
    assert dict(ours_metrics) == dict(theirs_metrics)


def test_aggregate_remembers_client_losses():
    replies, specs = _replies()
    strategy = sent(FedFocal(), replies)
    strategy.aggregate_train(1, replies)
    assert strategy.client_losses == {node: loss for node, _, loss in specs}


def test_constructor_rejects_bad_settings():
    with pytest.raises(ValueError):
        FedFocal(aggregation_gamma=-1.0)
    with pytest.raises(ValueError):
        FedFocal(sampling="greedy")
    with pytest.raises(ValueError):
        FedFocal(sampling_mix=1.5)


def test_focal_sampling_prefers_badly_served_nodes_and_is_seeded(monkeypatch):
    from flwr.app import ArrayRecord, ConfigRecord

    def make(seed):
        s = FedFocal(
            fraction_train=0.5, sampling="focal", sampling_mix=0.0, aggregation_gamma=8.0, seed=seed
        )
        s.client_losses = {1: 0.01, 2: 3.0, 3: 0.02, 4: 2.5}  # nodes 2 and 4 served badly
        monkeypatch.setattr(s, "_construct_messages", lambda _record, nodes, _kind: nodes)
        return s

    grid = NodeRegistry([1, 2, 3, 4])
    config = ConfigRecord()
    picks = [make(seed).configure_train(1, ArrayRecord(), config, grid) for seed in range(20)]
    assert all(len(p) == 2 for p in picks)
    assert sum(sorted(p) == [2, 4] for p in picks) >= 18  # f = (~0, 0.95, ~0, 0.92)^8
    assert config["server-round"] == 1 and config["focal-gamma"] == 2.0
    assert make(5).configure_train(1, ArrayRecord(), ConfigRecord(), grid) == picks[5]
