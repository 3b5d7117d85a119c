"""Faults in real runs: misbehaving clients, a server killed mid-run and resumed."""

import json
import shutil
import subprocess
import time

import psutil
import pytest
from flower_harness import BIN, PROJECT_ROOT

pytestmark = pytest.mark.timeout(600)


def _results(run_dir):
    return json.loads((run_dir / "results.json").read_text())


def faulty_app(tmp_path):
    """The app with its ClientApp swapped for tests/apps/faulty_client.py."""
    app = tmp_path / "faulty_app"
    shutil.copytree(PROJECT_ROOT / "fedfocal_app", app / "fedfocal_app", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(PROJECT_ROOT / "tests" / "apps" / "faulty_client.py", app / "faulty_client.py")
    pyproject = (PROJECT_ROOT / "pyproject.toml").read_text()
    pyproject = pyproject.replace(
        'clientapp = "fedfocal_app.client_app:app"', 'clientapp = "faulty_client:app"'
    ).replace('readme = "README.md"\n', "")
    # the copy holds only the package: drop the project's FAB exclusions
    pyproject = "\n".join(l for l in pyproject.splitlines() if not l.startswith("fab-exclude"))
    pyproject = pyproject.replace(
        "[tool.flwr.app.config]\n", '[tool.flwr.app.config]\nfault-mode = "misbehave"\n'
    )
    (app / "pyproject.toml").write_text(pyproject)
    return app


def test_bad_clients_are_dropped_and_the_run_completes(superlink, tmp_path):
    app = faulty_app(tmp_path)
    common = f"num-server-rounds=2 output-dir='{tmp_path}'"
    proc = superlink.flwr_run(f"{common} run-name='faulty'", num_supernodes=7, app=app)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = _results(tmp_path / "faulty")
    assert res["status"] == "finished" and len(res["rounds"]) == 3
    for rnd in res["rounds"][1:]:
        replies = rnd["replies"]
        assert replies["valid"] == 2 and replies["failed"] == 1
        reasons = " | ".join(d["reason"] for d in replies["dropped"])
        assert len(replies["dropped"]) == 4
        for expected in ("NaN or Inf", "the global model's is", "'pre_train_loss' missing", "exceeds max-num-examples"):
            assert expected in reasons
        assert len(rnd["clients"]) == 2  # only the good replies were aggregated
    assert "dropping reply from node" in proc.stdout

    # The same federation where the five bad clients simply crash: only the two good
    # replies count there too, so the results must be identical.
    good_only = superlink.flwr_run(
        f"{common} run-name='good-only' fault-mode='crash'", num_supernodes=7, app=app
    )
    assert good_only.returncode == 0, good_only.stdout[-3000:]
    ref = _results(tmp_path / "good-only")
    assert all(r["replies"]["failed"] == 5 for r in ref["rounds"][1:])
    assert [r["eval"] for r in res["rounds"]] == [r["eval"] for r in ref["rounds"]]


def _simulation_procs(link):
    """The flwr-simulation processes (ServerApp + Ray engine) of this SuperLink."""
    found = []
    for proc in psutil.Process(link.pid).children(recursive=True):
        try:
            if proc.status() != psutil.STATUS_ZOMBIE and "flwr-simulation" in " ".join(proc.cmdline()):
                found.append(proc)
        except psutil.Error:  # exited meanwhile
            pass
    return found


def test_server_killed_mid_run_resumes_to_the_same_result(superlink, tmp_path):
    common = f"num-server-rounds=4 output-dir='{tmp_path}' seed=3"
    straight = superlink.flwr_run(f"{common} run-name='straight'")
    assert straight.returncode == 0, straight.stdout[-3000:]

    cmd = [str(BIN / "flwr"), "run", str(PROJECT_ROOT), superlink.name, "--stream",
           "--run-config", f"{common} run-name='killed'",
           "--federation-config", "num-supernodes=3 client-resources-num-cpus=1"]
    killed_dir = tmp_path / "killed"
    with subprocess.Popen(cmd, env=superlink.env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, start_new_session=True) as run:
        try:
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline:
                if (killed_dir / "results.json").exists() and len(_results(killed_dir)["rounds"]) >= 3:
                    break  # rounds 0, 1, 2 recorded
                time.sleep(0.2)
            for proc in _simulation_procs(superlink):
                proc.kill()  # SIGKILL the ServerApp mid-run
            run.wait(timeout=60)
        finally:
            if run.poll() is None:
                run.kill()
    partial = _results(killed_dir)
    assert partial["status"] == "running" and 3 <= len(partial["rounds"]) < 5

    resumed = superlink.flwr_run(f"{common} run-name='ignored' resume-from='{killed_dir}'")
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    a, b = _results(tmp_path / "straight"), _results(killed_dir)
    assert b["status"] == "finished" and [r["round"] for r in b["rounds"]] == [0, 1, 2, 3, 4]
    assert len(b["resumed_at"]) == 1
    # Same seed, same shards, same data order, canonical aggregation order: equal.
    assert b["rounds"][-1]["eval"] == a["rounds"][-1]["eval"]


def test_resume_refuses_a_changed_config(superlink, tmp_path):
    run = superlink.flwr_run(f"num-server-rounds=1 output-dir='{tmp_path}' run-name='r'")
    assert run.returncode == 0
    again = superlink.flwr_run(f"num-server-rounds=2 output-dir='{tmp_path}' seed=9 resume-from='{tmp_path / 'r'}'")
    assert "the checkpoint was made with a different configuration ('seed': 42 -> 9)" in again.stdout + again.stderr
