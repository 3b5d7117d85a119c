"""Scale: 1,000 simulated SuperNodes on one machine; time per round vs clients sampled.

Runs the app through `flwr run` (CIFAR-10 from parquet, Dir(0.5), E=1) for a few
federation sizes and sampling fractions, and records seconds per round and the peak
RSS of the whole process tree (SuperLink, ServerApp, Ray workers). The claim checked:
memory stays bounded and time per round follows the number of clients *sampled*, not
the size of the federation.

    python bench/scale.py --data-dir ../shared/data/cifar10
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from throughput import ROOT, TreeRssSampler, simulation_superlink

from fedfocal_app.experiment import run_config_arg

# (number of SuperNodes, fraction-train): 10 sampled of 100 and of 1,000; 50 of 1,000.
CONFIGS = [(100, 0.1), (1000, 0.01), (1000, 0.05)]
ROUNDS = 3


def measure(link, data_dir: str, nodes: int, fraction: float, out: Path) -> dict:
    name = f"n{nodes}-f{fraction:g}"
    overrides = run_config_arg(
        {
            "dataset": "cifar10",
            "data-dir": data_dir,
            "dirichlet-alpha": 0.5,
            "num-server-rounds": ROUNDS,
            "fraction-train": fraction,
            "local-epochs": 1,
            "batch-size": 32,
            "learning-rate": 0.01,
            "strategy": "fedavg",
            "loss": "ce",
            "output-dir": str(out),
            "run-name": name,
        }
    )
    with TreeRssSampler(link.pid) as rss:
        t0 = time.perf_counter()
        proc = link.flwr_run(overrides, num_supernodes=nodes, timeout=3600)
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(proc.stdout[-3000:] + proc.stderr[-3000:])
    res = json.loads((out / name / "results.json").read_text())
    rounds = [r for r in res["rounds"] if r["round"] > 0]
    return {
        "supernodes": nodes,
        "fraction_train": fraction,
        "sampled_per_round": [len(r["clients"]) for r in rounds],
        "round_s": [r["wall_time_s"] for r in rounds],
        # round 1 includes each worker's one-off partitioning; later rounds are steady
        "steady_round_s": float(np.mean([r["wall_time_s"] for r in rounds[1:]])),
        "wall_s": wall,
        "peak_rss_mb": rss.peak / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "scale.json"))
    args = parser.parse_args()
    data_dir = str(Path(args.data_dir).resolve())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for nodes, fraction in CONFIGS:
            # a fresh SuperLink per size: its peak RSS is this federation's alone
            with simulation_superlink(Path(tmp) / f"link{nodes}-{fraction}") as link:
                row = measure(link, data_dir, nodes, fraction, Path(tmp) / "runs")
            rows.append(row)
            print(
                f"{nodes:5d} SuperNodes, fraction {fraction:<5g}: {row['sampled_per_round'][-1]:3d} "
                f"sampled, {row['steady_round_s']:.1f} s/round (steady), "
                f"peak RSS {row['peak_rss_mb']:.0f} MB",
                flush=True,
            )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rounds": ROUNDS, "runs": rows}, indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
