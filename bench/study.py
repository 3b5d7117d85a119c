"""CIFAR-10 accuracy study: FedAvg, FedProx, FedAvg + focal loss, FedFocal; resumable.

Every run goes through the app itself (`flwr run` on a private simulation SuperLink,
10 SuperNodes, one CPU each), so the baselines and FedFocal share the data pipeline,
model, local loop and evaluation. Results land in ``docs/results/<study>/<run-name>/``
(results.json is committed; runs with status "finished" are skipped on restart).

    python bench/study.py --data-dir ../shared/data/cifar10 all     # sweep, then the study
    python bench/study.py --data-dir ../shared/data/cifar10 sweep   # pick gamma, gamma_s only
    python bench/study.py --data-dir ../shared/data/cifar10 main    # 2 alphas x 4 x 3 seeds
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the real-process SuperLink launcher
from flower_harness import simulation_superlink  # noqa: E402

sys.path.insert(0, str(ROOT))  # the app package, without installing it
from fedfocal_app.experiment import run_config_arg  # noqa: E402

# The budget of every run (one place; the README quotes it).
BUDGET = {
    "dataset": "cifar10",
    "model": "simple-cnn",
    "num-server-rounds": 10,  # communication rounds (2 cores: ~3 min per run)
    "fraction-train": 1.0,  # all 10 clients every round
    "local-epochs": 1,  # passes over the local shard per round
    "batch-size": 32,
    "learning-rate": 0.01,  # NIID-Bench's SGD lr for simple-cnn
    "momentum": 0.9,
    "weight-decay": 0.0001,
    "min-partition-size": 10,
}
NUM_CLIENTS = 10
TABLE_START, TABLE_END = "<!-- study-table -->", "<!-- /study-table -->"
SWEEP_SEED = 100  # the sweep uses its own seed so the study seeds stay unseen
STUDY_SEEDS = (0, 1, 2)
ALPHAS = (0.1, 0.5)


def variants(gamma: float, gamma_s: float, mu: float = 0.01) -> dict[str, dict]:
    """The four methods compared, as run-config overrides."""
    return {
        "fedavg": {"strategy": "fedavg", "loss": "ce"},
        "fedprox": {"strategy": "fedprox", "loss": "ce", "proximal-mu": mu},
        "fedavg-focal": {"strategy": "fedavg", "loss": "focal", "focal-gamma": gamma},
        "fedfocal": {
            "strategy": "fedfocal",
            "loss": "focal",
            "focal-gamma": gamma,
            "aggregation-gamma": gamma_s,
        },
    }


def is_finished(run_dir: Path) -> bool:
    path = run_dir / "results.json"
    return path.exists() and json.loads(path.read_text()).get("status") == "finished"


def run_all(jobs: list[tuple[str, dict]], out: Path, data_dir: str) -> None:
    """Run every (run-name, overrides) job not yet finished, one after another."""
    todo = [(name, o) for name, o in jobs if not is_finished(out / name)]
    print(f"{len(jobs) - len(todo)} of {len(jobs)} runs already finished", flush=True)
    if not todo:
        return
    with tempfile.TemporaryDirectory() as tmp, simulation_superlink(Path(tmp)) as link:
        for name, overrides in todo:
            if (out.parent / "STOP").exists():  # touch docs/results/STOP: stop between runs
                print("STOP file found: stopping before", name, flush=True)
                return
            config = {**BUDGET, **overrides, "data-dir": data_dir}
            config.update({"output-dir": str(out), "run-name": name})
            t0 = time.perf_counter()
            proc = link.flwr_run(
                run_config_arg(config),
                num_supernodes=NUM_CLIENTS,
                timeout=3600,
            )
            ok = proc.returncode == 0 and is_finished(out / name)
            print(f"{name}: {'ok' if ok else 'FAILED'} in {time.perf_counter() - t0:.0f}s", flush=True)
            if not ok:
                print(proc.stdout[-3000:], proc.stderr[-3000:], flush=True)


def sweep_jobs() -> list[tuple[str, dict]]:
    """FedFocal on a 2x2 grid of (gamma, gamma_s), Dir(0.1), a seed of its own."""
    jobs = []
    for gamma in (1.0, 2.0):
        for gamma_s in (1.0, 2.0):
            o = variants(gamma, gamma_s)["fedfocal"]
            name = f"sweep-fedfocal-g{gamma:g}-gs{gamma_s:g}"
            jobs.append((name, {**o, "dirichlet-alpha": 0.1, "seed": SWEEP_SEED}))
    return jobs


def pick_from_sweep(sweep_dir: Path) -> tuple[float, float]:
    """(gamma, gamma_s) of the sweep run with the best final balanced accuracy."""
    best = None
    for path in sorted(sweep_dir.glob("*/results.json")):
        res = json.loads(path.read_text())
        if res.get("status") != "finished":
            continue
        score = res["rounds"][-1]["eval"]["balanced_accuracy"]
        if best is None or score > best[0]:
            best = (score, res["config"]["focal-gamma"], res["config"]["aggregation-gamma"])
    if best is None:
        raise SystemExit(f"no finished sweep run in {sweep_dir}")
    return best[1], best[2]


def main_jobs(gamma: float, gamma_s: float) -> list[tuple[str, dict]]:
    jobs = []
    for seed in STUDY_SEEDS:  # seed-major: a partial study still covers every method
        for alpha in ALPHAS:
            for name, o in variants(gamma, gamma_s).items():
                jobs.append((f"{name}-a{alpha:g}-s{seed}", {**o, "dirichlet-alpha": alpha, "seed": seed}))
    return jobs


def summarise(study_dir: Path) -> list[dict]:
    """Mean and std over seeds of final accuracy and balanced accuracy per (method, alpha)."""
    groups: dict[tuple[str, float], list[dict]] = {}
    for path in sorted(study_dir.glob("*/results.json")):
        res = json.loads(path.read_text())
        if res.get("status") != "finished":
            continue
        method = path.parent.name.rsplit("-a", 1)[0]
        groups.setdefault((method, res["config"]["dirichlet-alpha"]), []).append(res)
    rows = []
    order = list(variants(1.0, 1.0))
    for (method, alpha), runs in sorted(
        groups.items(),
        key=lambda kv: (kv[0][1], order.index(kv[0][0]) if kv[0][0] in order else len(order)),
    ):
        acc = np.array([r["rounds"][-1]["eval"]["accuracy"] for r in runs])
        bal = np.array([r["rounds"][-1]["eval"]["balanced_accuracy"] for r in runs])
        worst = np.array([min(r["rounds"][-1]["eval"]["per_class_recall"]) for r in runs])
        rows.append(
            {
                "method": method,
                "alpha": alpha,
                "seeds": sorted(r["config"]["seed"] for r in runs),
                "accuracy_mean": float(acc.mean()),
                "accuracy_std": float(acc.std(ddof=1)) if len(acc) > 1 else float("nan"),
                "balanced_accuracy_mean": float(bal.mean()),
                "balanced_accuracy_std": float(bal.std(ddof=1)) if len(bal) > 1 else float("nan"),
                "worst_class_recall_mean": float(worst.mean()),
                "worst_class_recall_std": float(worst.std(ddof=1)) if len(worst) > 1 else float("nan"),
            }
        )
    return rows


def markdown_table(rows: list[dict]) -> str:
    """The study table: mean ± sample std over seeds, in percent."""

    def cell(mean: float, std: float) -> str:
        return f"{100 * mean:.1f}" + ("" if np.isnan(std) else f" ± {100 * std:.1f}")

    lines = [
        "| Dir(α) | method | seeds | accuracy (%) | balanced accuracy (%) | worst-class recall (%) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['alpha']:g} | {r['method']} | {len(r['seeds'])} ({', '.join(map(str, r['seeds']))}) "
            f"| {cell(r['accuracy_mean'], r['accuracy_std'])} "
            f"| {cell(r['balanced_accuracy_mean'], r['balanced_accuracy_std'])} "
            f"| {cell(r['worst_class_recall_mean'], r['worst_class_recall_std'])} |"
        )
    return "\n".join(lines)


def main() -> None:
    # SIGTERM unwinds like Ctrl-C, so the SuperLink context manager stops its processes.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["sweep", "main", "all", "table"])
    parser.add_argument("--data-dir", default="", help="folder with CIFAR-10 parquet files")
    parser.add_argument("--out", default=str(ROOT / "docs" / "results"))
    parser.add_argument("--readme", help="with table: also write it into this README")
    args = parser.parse_args()
    if args.what == "table":
        rows = summarise(Path(args.out) / "study")
        (Path(args.out) / "study_summary.json").write_text(json.dumps(rows, indent=2))
        table = markdown_table(rows)
        print(table)
        if args.readme:  # rewrite the table between the README's markers
            readme = Path(args.readme)
            head, rest = readme.read_text().split(TABLE_START, 1)
            _, tail = rest.split(TABLE_END, 1)
            readme.write_text(f"{head}{TABLE_START}\n{table}\n{TABLE_END}{tail}")
        return
    if not args.data_dir:
        parser.error("--data-dir is required to run studies")
    data_dir = str(Path(args.data_dir).resolve())
    out = Path(args.out)
    if args.what in ("sweep", "all"):
        run_all(sweep_jobs(), out / "sweep", data_dir)
    if args.what in ("main", "all"):
        gamma, gamma_s = pick_from_sweep(out / "sweep")
        print(f"chosen by the sweep: focal-gamma={gamma:g} aggregation-gamma={gamma_s:g}", flush=True)
        run_all(main_jobs(gamma, gamma_s), out / "study", data_dir)


if __name__ == "__main__":
    main()
