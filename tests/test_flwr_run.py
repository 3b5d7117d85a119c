"""Integration: the app through a real `flwr run` on a simulation SuperLink (Ray)."""

import json

import pytest

pytestmark = pytest.mark.timeout(600)


def _results(run_dir):
    return json.loads((run_dir / "results.json").read_text())


def test_fedfocal_on_digits_learns(superlink, tmp_path):
    proc = superlink.flwr_run(
        f"num-server-rounds=3 output-dir='{tmp_path}' run-name='digits'", num_supernodes=4
    )
    run_dir = tmp_path / "digits"
    assert proc.returncode == 0, proc.stdout + proc.stderr
    res = _results(run_dir)
    assert res["status"] == "finished"
    assert [r["round"] for r in res["rounds"]] == [0, 1, 2, 3]
    final = res["rounds"][-1]
    assert final["eval"]["accuracy"] > 0.5  # chance is 0.1
    assert final["eval"]["balanced_accuracy"] > 0.5
    assert len(final["eval"]["per_class_recall"]) == 10
    assert len(final["clients"]) == 4
    assert {"num-examples", "train_loss", "pre_train_loss"} <= set(final["clients"][0])
    assert sum(c["num-examples"] for c in final["clients"]) == 1437
    assert res["config"]["strategy"] == "fedfocal" and res["environment"]["versions"]["flwr"]
    assert all(r["wall_time_s"] > 0 for r in res["rounds"])
    assert (run_dir / "model.pt").stat().st_size > 0
    assert (run_dir / "accuracy.png").stat().st_size > 0
    assert "fedfocal round 3: loss" in proc.stdout  # one log line per round


def test_cifar10_path_on_tiny_parquet(superlink, tmp_path, tiny_cifar10):
    proc = superlink.flwr_run(
        f"dataset='cifar10' data-dir='{tiny_cifar10}' min-partition-size=5 "
        f"learning-rate=0.01 num-server-rounds=2 output-dir='{tmp_path}' run-name='c'",
        num_supernodes=3,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    res = _results(tmp_path / "c")
    assert res["status"] == "finished" and len(res["rounds"]) == 3
    assert sum(c["num-examples"] for c in res["rounds"][-1]["clients"]) == 120
    assert res["config"]["model"] == "auto"


def test_bad_run_config_fails_before_training(superlink, tmp_path):
    proc = superlink.flwr_run(f"focal-gamma=-1.0 output-dir='{tmp_path}' run-name='bad'")
    out = proc.stdout + proc.stderr
    assert "run config 'focal-gamma' = -1.0 is invalid: must be a number in [0.0, inf)" in out
    assert not (tmp_path / "bad").exists()  # nothing written, nothing trained
