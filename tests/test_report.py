"""The heterogeneity and fairness report on real runs (`flwr run`, digits, 3 SuperNodes).

Two 2-round runs share one simulation SuperLink: FedFocal with federated (fairness)
evaluation every round, and FedAvg with everything optional left at its default.
"""

import json

import pytest
from flower_harness import simulation_superlink

from fedfocal_app.config import parse_run_config
from fedfocal_app.data import load_shard, local_splits
from fedfocal_app.report import load_runs, main, write_report

pytestmark = pytest.mark.timeout(600)
NODES = 3


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run folders of the two real runs (one SuperLink for the module)."""
    out = tmp_path_factory.mktemp("runs")
    specs = {
        "focal": "strategy='fedfocal' fairness-eval-every=1",
        "avg": "strategy='fedavg' loss='ce'",
    }
    with simulation_superlink(tmp_path_factory.mktemp("superlink")) as link:
        for name, extra in specs.items():
            proc = link.flwr_run(
                f"{extra} num-server-rounds=2 local-epochs=1 output-dir='{out}' run-name='{name}'",
                num_supernodes=NODES,
            )
            assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-5000:]
    return {name: out / name for name in specs}


def _results(run_dir):
    return json.loads((run_dir / "results.json").read_text())


def test_federated_evaluation_returns_one_accuracy_per_sampled_client(runs):
    res = _results(runs["focal"])
    cfg = parse_run_config(res["config"])
    held_out = [len(local_splits(cfg, load_shard(cfg, i, NODES), i)[1]) for i in range(NODES)]
    for entry in res["rounds"][1:]:
        fairness = entry["fairness"]
        assert fairness["num_clients"] == NODES == len(fairness["clients"])
        accuracies = [c["accuracy"] for c in fairness["clients"]]
        assert all(0.0 <= a <= 1.0 for a in accuracies)
        assert fairness["accuracy_worst"] == min(accuracies)
        assert sorted(c["num-examples"] for c in fairness["clients"]) == sorted(held_out)
        # Clients trained without their local test split.
        assert sum(c["num-examples"] for c in entry["clients"]) == 1437 - sum(held_out)
    assert "fairness" not in res["rounds"][0]


def test_default_run_has_no_holdout_and_no_federated_evaluation(runs):
    res = _results(runs["avg"])
    assert all("fairness" not in r for r in res["rounds"])
    assert sum(c["num-examples"] for c in res["rounds"][-1]["clients"]) == 1437


def test_server_shard_statistics_match_the_client_shards(runs):
    res = _results(runs["avg"])
    cfg = parse_run_config(res["config"])
    shards = res["shards"]
    assert shards["num_partitions"] == NODES
    for i, client in enumerate(shards["clients"]):
        assert client["label_counts"] == load_shard(cfg, i, NODES).label_counts().tolist()
        assert 0.0 <= client["tv_distance"] <= 1.0


def test_update_cosines_every_round(runs):
    res = _results(runs["focal"])
    assert "updates" not in res["rounds"][0]  # round 0 is the initial model
    for entry in res["rounds"][1:]:
        updates = entry["updates"]
        assert len(updates["cosine_to_aggregate"]) == len(updates["norm"]) == NODES
        assert -1.0 <= updates["cosine_min"] <= updates["cosine_mean"] <= 1.0
        assert all(n > 0 for n in updates["norm"])


def test_report_command_writes_figures_and_table(runs, tmp_path, capsys):
    out = tmp_path / "report"
    # The entry point of `python -m fedfocal_app.report`, in-process: a subprocess
    # would only add another import of torch and Flower to the test time.
    main([str(runs["focal"]), str(runs["avg"]), "--out", str(out)])
    assert str(out / "report.md") in capsys.readouterr().out
    names = {
        "accuracy.png",
        "per_class_recall.png",
        "client_accuracy.png",
        "update_cosine.png",
        "shards-digits-a0.5-s42-n3.png",  # both runs share one shard set
        "report.md",
    }
    assert {p.name for p in out.iterdir()} == names
    assert all((out / n).stat().st_size > 0 for n in names)
    table = (out / "report.md").read_text()
    assert "| fedfocal/focal/α=0.5/seed=42 | finished | 2 |" in table
    assert "| fedavg/ce/α=0.5/seed=42 | finished | 2 |" in table


def test_report_on_a_run_without_optional_parts(runs, tmp_path):
    # An older results.json: no shards, no update statistics, no fairness.
    res = _results(runs["avg"])
    del res["shards"]
    for entry in res["rounds"]:
        entry.pop("updates", None)
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "results.json").write_text(json.dumps(res))
    written = write_report([tmp_path / "old"], tmp_path / "report")
    assert {p.name for p in written.values()} == {
        "accuracy.png",
        "per_class_recall.png",
        "report.md",
    }
    assert load_runs([tmp_path / "old"])[0].name == "fedavg/ce/α=0.5/seed=42"


def test_report_refuses_a_folder_without_results(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main([str(tmp_path)])
    assert "no results.json in" in capsys.readouterr().err


def test_shard_heatmap_from_stored_histograms_when_data_is_not_local(runs, tmp_path):
    # CIFAR-10 from the Hub: the report never downloads, it plots the stored counts.
    res = _results(runs["avg"])
    res["config"].update({"dataset": "cifar10", "data-dir": ""})
    (tmp_path / "hub").mkdir()
    (tmp_path / "hub" / "results.json").write_text(json.dumps(res))
    written = write_report([tmp_path / "hub"], tmp_path / "report")
    assert (tmp_path / "report" / "shards-cifar10-a0.5-s42-n3.png") in written.values()
