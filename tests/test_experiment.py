"""fedfocal_app.experiment: the `flwr run` command it builds and how it reads results.

`flwr run` itself is replaced by a fake here; tests/test_notebook.py runs it for real.
"""

import json
import subprocess
from pathlib import Path

import pytest
from flwr.common.config import parse_config_args

from fedfocal_app import experiment
from fedfocal_app.config import ConfigError
from fedfocal_app.experiment import (
    FlwrRunError,
    flwr_run_command,
    run_app,
    run_config_arg,
    toml_value,
)


@pytest.mark.parametrize(
    "value",
    [
        3,
        0,
        -2,
        0.05,
        1e-05,
        2.0,
        1e20,
        True,
        False,
        "",
        "fedavg",
        "/abs/path with spaces/cifar10",
        "C:\\data\\cifar10",
        "it's",
        'say "hi"',
    ],
)
def test_values_round_trip_through_flwr_parsing(value):
    parsed = parse_config_args([f"key={toml_value(value)}"])
    assert parsed == {"key": value}
    assert type(parsed["key"]) is type(value)


def test_whole_config_round_trips_through_flwr_parsing():
    config = {
        "num-server-rounds": 12,
        "learning-rate": 0.05,
        "strategy": "fedfocal",
        "output-dir": "/tmp/a b/out",
        "run-name": "fedavg-ce",
        "focal-gamma": 2.0,
    }
    assert parse_config_args([run_config_arg(config)]) == config


@pytest.mark.parametrize("value", ["both ' and \"", "two\nlines", [1, 2], None, {"a": 1}])
def test_values_flwr_cannot_pass_are_refused(value):
    with pytest.raises(ValueError):
        toml_value(value)


@pytest.mark.parametrize("key", ["has space", "a=b", "", "quote'"])
def test_bad_keys_are_refused(key):
    with pytest.raises(ValueError, match="key"):
        run_config_arg({key: 1})


def test_command_names_superlink_and_federation_config():
    cmd = flwr_run_command({"loss": "ce"}, "test", num_supernodes=4, app_dir="/app")
    assert cmd[1:] == [
        "run",
        "/app",
        "test",
        "--stream",
        "--run-config",
        "loss='ce'",
        "--federation-config",
        "num-supernodes=4 client-resources-num-cpus=1",
    ]
    default = flwr_run_command({}, None, num_supernodes=2, gpus_per_supernode=0.5)
    assert default[1:3] == ["run", str(experiment.APP_DIR)] and default[3] == "--stream"
    assert default[-1] == (
        "num-supernodes=2 client-resources-num-cpus=1 client-resources-num-gpus=0.5"
    )


class FakeFlwr:
    """Stands in for `subprocess.run`: records calls, writes results.json like the app."""

    def __init__(self, status="finished", returncode=0, output="", timeout=False):
        self.status, self.returncode, self.output = status, returncode, output
        self.timeout = timeout
        self.calls = []

    def __call__(self, cmd, env=None, **kwargs):
        self.calls.append((cmd, env))
        if cmd[1] == "stop":
            return subprocess.CompletedProcess(cmd, 0, "", "")
        if self.timeout:
            raise subprocess.TimeoutExpired(cmd, 1.0, output=self.output, stderr="")
        config = parse_config_args([cmd[cmd.index("--run-config") + 1]])
        run_dir = Path(config["output-dir"]) / config["run-name"]
        if self.status:
            run_dir.mkdir(parents=True, exist_ok=True)
            results = {"status": self.status, "config": config, "rounds": []}
            (run_dir / "results.json").write_text(json.dumps(results))
        return subprocess.CompletedProcess(cmd, self.returncode, self.output, "")


def test_run_app_makes_output_dir_absolute_and_returns_results(monkeypatch, tmp_path):
    fake = FakeFlwr()
    monkeypatch.setattr(experiment.subprocess, "run", fake)
    monkeypatch.chdir(tmp_path)
    res = run_app({"loss": "ce", "output-dir": "out", "run-name": "a"}, num_supernodes=3)
    assert res["status"] == "finished"
    assert res["config"]["output-dir"] == str(tmp_path / "out")
    cmd, env = fake.calls[0]
    assert env["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] == "1"
    assert cmd[-1] == "num-supernodes=3 client-resources-num-cpus=1"


def test_run_app_passes_env_and_names_a_run_without_run_name(monkeypatch, tmp_path):
    fake = FakeFlwr()
    monkeypatch.setattr(experiment.subprocess, "run", fake)
    res = run_app({"output-dir": str(tmp_path)}, "test", env={"FLWR_HOME": "/h"})
    assert res["config"]["run-name"].startswith("run-")
    cmd, env = fake.calls[0]
    assert env["FLWR_HOME"] == "/h" and cmd[3] == "test"


def test_stale_results_are_never_read(monkeypatch, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "results.json").write_text('{"status": "finished"}')
    monkeypatch.setattr(experiment.subprocess, "run", FakeFlwr(status=None))
    with pytest.raises(FlwrRunError, match="wrote no"):
        run_app({"output-dir": str(tmp_path), "run-name": "a"})


def test_failed_run_raises_with_output_tail(monkeypatch, tmp_path):
    monkeypatch.setattr(
        experiment.subprocess, "run", FakeFlwr(status=None, returncode=1, output="boom")
    )
    with pytest.raises(FlwrRunError, match="exited with 1(.|\n)*boom"):
        run_app({"output-dir": str(tmp_path), "run-name": "a"})


def test_unfinished_run_raises(monkeypatch, tmp_path):
    monkeypatch.setattr(
        experiment.subprocess, "run", FakeFlwr(status="running", output="ServerApp died")
    )
    with pytest.raises(FlwrRunError, match="'running'(.|\n)*ServerApp died"):
        run_app({"output-dir": str(tmp_path), "run-name": "a"})


def test_timeout_stops_the_run(monkeypatch, tmp_path):
    fake = FakeFlwr(timeout=True, output="Successfully started run 77\n")
    monkeypatch.setattr(experiment.subprocess, "run", fake)
    with pytest.raises(FlwrRunError, match="timed out"):
        run_app({"output-dir": str(tmp_path), "run-name": "a"}, "test", timeout=1.0)
    stop_cmd, _ = fake.calls[1]
    assert stop_cmd[1:] == ["stop", "77", "test"]


def test_bad_config_fails_before_flwr_starts(monkeypatch, tmp_path):
    fake = FakeFlwr()
    monkeypatch.setattr(experiment.subprocess, "run", fake)
    with pytest.raises(ConfigError, match="focal-gamma"):
        run_app({"focal-gamma": -1.0, "output-dir": str(tmp_path)})
    with pytest.raises(ValueError, match="unknown run config keys \\['focal-gama'\\]"):
        run_app({"focal-gama": 1.0, "output-dir": str(tmp_path)})
    assert fake.calls == []
