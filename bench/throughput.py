"""Benchmark: the app through `flwr run` against pure compute of the same work.

Claim measured: how close the app (Flower simulation, Ray, 10 SuperNodes, one CPU
each) comes to the speed of the bare training loop on already-decoded tensors.

In one run on one machine it measures
  (1) pure compute: the same rounds in one Python process without Flower: per client
      the pre-training loss pass, E local epochs of the app's own loop (`training.train`)
      on the same Dirichlet shards, FedAvg of the results, central evaluation;
  (2) the app: `flwr run` of the same config on a private simulation SuperLink;
and prints samples/s, seconds per round, start-up, the ratios (2)/(1) and peak RSS,
and writes them to a JSON file. Ratios, not absolute times, are what to compare
across machines.

    python bench/throughput.py --data-dir ../shared/data/cifar10 --rounds 20
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import threading
import time
import tomllib
from pathlib import Path

import numpy as np
import psutil
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the app package, without installing it
sys.path.insert(0, str(ROOT / "tests"))  # the real-process SuperLink launcher
from flower_harness import simulation_superlink  # noqa: E402

from fedfocal_app.config import parse_run_config  # noqa: E402
from fedfocal_app.data import load_shard, load_test_set  # noqa: E402
from fedfocal_app.experiment import run_config_arg  # noqa: E402
from fedfocal_app.models import build_model  # noqa: E402
from fedfocal_app.outputs import environment_info  # noqa: E402
from fedfocal_app.server_app import train_config_record  # noqa: E402
from fedfocal_app.training import TrainSettings, evaluate, mean_cross_entropy, train  # noqa: E402

NUM_CLIENTS = 10
# The setting of the performance issue: CIFAR-10, Dir(0.5), E=2, batch 32, FedAvg
# weights, central evaluation only.
SETTING = {
    "dataset": "cifar10",
    "dirichlet-alpha": 0.5,
    "local-epochs": 2,
    "batch-size": 32,
    "learning-rate": 0.01,
    "strategy": "fedavg",
    "loss": "ce",
}


def run_config(data_dir: str, rounds: int, out: Path) -> dict:
    with open(ROOT / "pyproject.toml", "rb") as fh:
        raw = dict(tomllib.load(fh)["tool"]["flwr"]["app"]["config"])
    raw.update(SETTING)
    raw.update({"data-dir": data_dir, "num-server-rounds": rounds, "output-dir": str(out), "run-name": "app"})
    return raw


def pure_compute(raw: dict, threads: int) -> dict:
    """The app's per-round work in one process, on tensors decoded up front."""
    torch.set_num_threads(threads)
    cfg = parse_run_config(raw)
    device = torch.device("cpu")
    t0 = time.perf_counter()
    shards = [load_shard(cfg, i, NUM_CLIENTS) for i in range(NUM_CLIENTS)]
    test = load_test_set(cfg)
    startup = time.perf_counter() - t0
    model = build_model(cfg.resolved_model, seed=cfg.seed)
    global_state = {k: v.clone() for k, v in model.state_dict().items()}
    base = dict(train_config_record(cfg))
    train_time, round_times, samples = 0.0, [], 0
    for rnd in range(1, cfg.num_server_rounds + 1):
        t_round = time.perf_counter()
        settings = TrainSettings.from_config({**base, "server-round": rnd})
        states, weights = [], []
        for pid, shard in enumerate(shards):
            model.load_state_dict(global_state)
            mean_cross_entropy(model, shard, device)
            t = time.perf_counter()
            train(model, shard, settings, device, seed=rnd * 1000 + pid)
            train_time += time.perf_counter() - t
            samples += len(shard) * settings.epochs
            states.append({k: v.detach().clone() for k, v in model.state_dict().items()})
            weights.append(len(shard))
        w = np.asarray(weights, dtype=np.float64) / sum(weights)
        global_state = {k: sum(float(wi) * s[k] for wi, s in zip(w, states)) for k in states[0]}
        model.load_state_dict(global_state)
        metrics = evaluate(model, test, device)
        round_times.append(time.perf_counter() - t_round)
    total = startup + sum(round_times)
    return {
        "threads": threads,
        "startup_s": startup,
        "round_s": round_times,
        "total_s": total,
        "train_samples": samples,
        "train_samples_per_s": samples / train_time,
        "final_accuracy": metrics["accuracy"],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


class TreeRssSampler:
    """Peak summed RSS of a process and all its descendants, sampled every 0.5 s."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            total = 0
            for p in [self.root, *self.root.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            self._stop.wait(0.5)

    def __enter__(self) -> "TreeRssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def app_run(raw: dict) -> dict:
    """The same work through `flwr run` (start-up included)."""
    keys = (*SETTING, "data-dir", "num-server-rounds", "output-dir", "run-name")
    overrides = run_config_arg({k: raw[k] for k in keys})
    with tempfile.TemporaryDirectory() as tmp, simulation_superlink(Path(tmp)) as link:
        with TreeRssSampler(link.pid) as rss:
            t0 = time.perf_counter()
            proc = link.flwr_run(overrides, num_supernodes=NUM_CLIENTS, timeout=7200)
            wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(proc.stdout[-3000:] + proc.stderr[-3000:])
    res = json.loads((Path(raw["output-dir"]) / "app" / "results.json").read_text())
    rounds = [r for r in res["rounds"] if r["round"] > 0]
    clients = [c for r in rounds for c in r["clients"]]
    samples = sum(c["num-examples"] for c in clients) * raw["local-epochs"]
    return {
        "wall_s": wall,
        "round_s": [r["wall_time_s"] for r in rounds],
        "startup_s": wall - sum(r["wall_time_s"] for r in rounds),
        "train_samples": samples,
        # each ClientApp trains on one CPU: samples per second of one worker's loop
        "train_samples_per_s_per_worker": samples / sum(c["train_time_s"] for c in clients),
        "final_accuracy": rounds[-1]["eval"]["accuracy"],
        "peak_rss_mb": rss.peak / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="CIFAR-10 parquet folder")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "throughput.json"))
    args = parser.parse_args()
    data_dir = str(Path(args.data_dir).resolve())
    with tempfile.TemporaryDirectory() as outputs:
        raw = run_config(data_dir, args.rounds, Path(outputs))
        one = pure_compute(raw, threads=1)  # the loop as one ClientApp worker runs it
        app = app_run(raw)
    cpus = os.cpu_count() or 1
    result = {
        "setting": {**SETTING, "num-server-rounds": args.rounds, "clients": NUM_CLIENTS},
        "pure_compute_1_thread": one,
        "app": app,
        "ratios": {
            # >= 0.9 is the target: the app's loop runs at the speed of the bare loop
            "train_phase_app_over_pure": app["train_samples_per_s_per_worker"] / one["train_samples_per_s"],
            # pure compute on all CPUs = the single-thread time split over the CPUs
            "whole_run_app_over_pure": app["wall_s"] / (one["total_s"] / cpus),
        },
        "environment": environment_info(),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"pure compute (1 thread): {one['train_samples_per_s']:.0f} samples/s, "
          f"{np.mean(one['round_s']):.1f} s/round, start-up {one['startup_s']:.1f} s, "
          f"peak RSS {one['peak_rss_mb']:.0f} MB")
    print(f"app (flwr run, {NUM_CLIENTS} SuperNodes x 1 CPU): "
          f"{app['train_samples_per_s_per_worker']:.0f} samples/s per worker, "
          f"{np.mean(app['round_s']):.1f} s/round, start-up {app['startup_s']:.1f} s, "
          f"peak RSS {app['peak_rss_mb']:.0f} MB")
    print(f"train phase app/pure: {result['ratios']['train_phase_app_over_pure']:.2f} (target >= 0.90)")
    print(f"whole run app/pure ({cpus} CPUs): {result['ratios']['whole_run_app_over_pure']:.2f} (target <= 1.25)")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
