"""Compare runs: where the global model fails (classes, clients) and how skewed the data was.

    python -m fedfocal_app.report RUN_DIR [RUN_DIR ...] [--out DIR]

Reads each run folder's ``results.json`` (finished or still running) and writes to
``--out`` (default ``report/``):

- ``accuracy.png``: central test accuracy (solid) and balanced accuracy (dashed) per
  round, all runs on one plot;
- ``per_class_recall.png``: final per-class recall on the central test set, runs side
  by side;
- ``client_accuracy.png``: accuracy of the global model on each client's local test
  split at the last fairness round (runs with ``fairness-eval-every > 0``);
- ``update_cosine.png``: mean (solid) and minimum (dashed) cosine of client updates to
  the aggregated update per round;
- ``shards-<dataset>-a<alpha>-s<seed>-n<N>.png``: label heatmap of each distinct shard
  set (flwr-datasets' ``plot_label_distributions`` when the partitioner can be rebuilt
  offline, else the histograms stored in ``results.json``);
- ``report.md``: one table row per run, a per-class recall table and the figures.

Parts a run did not record (fairness, shards, updates) are left out for that run; a
figure nobody has data for is not written. Runs are named ``strategy/loss/α/seed``
(plus the folder name when two runs share that name).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display (the command runs on servers too)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from .outputs import load_results  # noqa: E402

ACCURACY_FILE = "accuracy.png"
RECALL_FILE = "per_class_recall.png"
CLIENT_FILE = "client_accuracy.png"
COSINE_FILE = "update_cosine.png"
MARKDOWN_FILE = "report.md"
DASH = "–"  # an empty table cell


@dataclass(frozen=True)
class Run:
    """One run folder as the report sees it."""

    name: str  # strategy/loss/α/seed, unique among the runs of one report
    path: Path
    results: dict[str, Any]

    @property
    def config(self) -> dict[str, Any]:
        return self.results.get("config", {})

    @property
    def evaluated(self) -> list[dict[str, Any]]:
        """Rounds with a central evaluation, in order."""
        return [r for r in self.results.get("rounds", []) if r.get("eval")]

    @property
    def final_eval(self) -> dict[str, Any] | None:
        return self.evaluated[-1]["eval"] if self.evaluated else None

    @property
    def fairness_rounds(self) -> list[dict[str, Any]]:
        return [r for r in self.results.get("rounds", []) if r.get("fairness")]

    @property
    def update_rounds(self) -> list[dict[str, Any]]:
        return [r for r in self.results.get("rounds", []) if r.get("updates")]


def run_name(config: dict[str, Any]) -> str:
    """``strategy/loss/α=<alpha>/seed=<seed>`` from a stored run config."""
    alpha = config.get("dirichlet-alpha")
    alpha_text = f"{alpha:g}" if isinstance(alpha, (int, float)) else "?"
    return (
        f"{config.get('strategy', '?')}/{config.get('loss', '?')}"
        f"/α={alpha_text}/seed={config.get('seed', '?')}"
    )


def load_runs(paths: Sequence[str | Path]) -> list[Run]:
    """Read the run folders; names get the folder name appended where they collide."""
    loaded = [(Path(p), load_results(p)) for p in paths]
    names = [run_name(res.get("config", {})) for _, res in loaded]
    runs = []
    for (path, res), name in zip(loaded, names):
        if names.count(name) > 1:
            name = f"{name} [{path.resolve().name}]"
        runs.append(Run(name=name, path=path, results=res))
    return runs


def _colour(i: int) -> Any:
    return plt.get_cmap("tab10")(i % 10)


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- figures


def plot_accuracy_curves(runs: Sequence[Run], path: Path) -> Path | None:
    """Accuracy (solid) and balanced accuracy (dashed) per round, one colour per run."""
    if not any(run.evaluated for run in runs):
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, run in enumerate(runs):
        xs = [r["round"] for r in run.evaluated]
        acc = [r["eval"]["accuracy"] for r in run.evaluated]
        bal = [r["eval"]["balanced_accuracy"] for r in run.evaluated]
        ax.plot(xs, acc, "-o", color=_colour(i), ms=3, label=f"{run.name} accuracy")
        ax.plot(xs, bal, "--s", color=_colour(i), ms=3, label=f"{run.name} balanced acc.")
    ax.set_xlabel("server round")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("central test score (fraction)")
    ax.set_ylim(0, 1)
    ax.set_title("Global model on the central test set")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_per_class_recall(runs: Sequence[Run], path: Path) -> Path | None:
    """Final per-class recall of each run as grouped bars (classes on the x axis)."""
    finals = [(i, run, run.final_eval) for i, run in enumerate(runs)]
    finals = [(i, run, ev) for i, run, ev in finals if ev and ev.get("per_class_recall")]
    if not finals:
        return None
    num_classes = max(len(ev["per_class_recall"]) for _, _, ev in finals)
    width = 0.8 / len(finals)
    fig, ax = plt.subplots(figsize=(max(7, 0.8 * num_classes), 4.5))
    for j, (i, run, ev) in enumerate(finals):
        recall = ev["per_class_recall"]
        xs = np.arange(len(recall)) - 0.4 + width * (j + 0.5)
        ax.bar(xs, recall, width=width, color=_colour(i), label=run.name)
    ax.set_xticks(range(num_classes))
    ax.set_xlabel("class")
    ax.set_ylabel("recall on the central test set (final round)")
    ax.set_ylim(0, 1.05)
    ax.set_title("Per-class recall of the final global model")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_client_accuracy(runs: Sequence[Run], path: Path) -> Path | None:
    """Box plot (with every client as a dot) of local-test accuracy at the last fairness round."""
    data = [
        (i, run, [c["accuracy"] for c in run.fairness_rounds[-1]["fairness"]["clients"]])
        for i, run in enumerate(runs)
        if run.fairness_rounds
    ]
    if not data:
        return None
    fig, ax = plt.subplots(figsize=(max(5, 1.8 * len(data)), 4.5))
    ax.boxplot([acc for _, _, acc in data], widths=0.5, showfliers=False)
    rng = np.random.default_rng(0)  # jitter only, so the figure is reproducible
    for k, (i, _, acc) in enumerate(data, start=1):
        ax.scatter(k + rng.uniform(-0.12, 0.12, len(acc)), acc, color=_colour(i), s=18, zorder=3)
    labels = [f"{run.name}\n(round {run.fairness_rounds[-1]['round']})" for _, run, _ in data]
    ax.set_xticks(range(1, len(data) + 1), labels, fontsize=7)
    ax.set_xlabel("run (last round with federated evaluation)")
    ax.set_ylabel("accuracy on the client's local test split")
    # Zoom on the spread (the point of the figure) but never above 1 or below 0.
    lowest = min(min(acc) for _, _, acc in data)
    ax.set_ylim(max(0.0, lowest - 0.1), 1.02)
    ax.set_title("Global model per client (one dot per client)")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def plot_update_cosine(runs: Sequence[Run], path: Path) -> Path | None:
    """Mean (solid) and minimum (dashed) cosine of client updates to the aggregate."""
    if not any(run.update_rounds for run in runs):
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, run in enumerate(runs):
        if not run.update_rounds:
            continue
        xs = [r["round"] for r in run.update_rounds]
        ax.plot(xs, [r["updates"]["cosine_mean"] for r in run.update_rounds], "-o",
                color=_colour(i), ms=3, label=f"{run.name} mean")  # fmt: skip
        ax.plot(xs, [r["updates"]["cosine_min"] for r in run.update_rounds], "--",
                color=_colour(i), label=f"{run.name} min")  # fmt: skip
    ax.set_xlabel("server round")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("cosine(client update, aggregated update)")
    ax.set_ylim(min(0.0, ax.get_ylim()[0]), 1.0)
    ax.set_title("Update heterogeneity (1 = all clients pull the same way)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def shard_key(run: Run) -> tuple | None:
    """What fixes a shard set: dataset, data, α, minimum size, seed, number of shards."""
    shards = run.results.get("shards")
    if not shards:
        return None
    c = run.config
    return (
        c.get("dataset"),
        c.get("data-dir"),
        c.get("dirichlet-alpha"),
        c.get("min-partition-size"),
        c.get("seed"),
        shards["num_partitions"],
    )


def _rebuilt_partitioner(run: Run) -> Any | None:
    """The run's DirichletPartitioner, if it can be rebuilt offline and matches the record.

    Only digits (ships with scikit-learn) or CIFAR-10 from a local ``data-dir``: the
    report never waits on the Hub. The rebuilt counts must equal the stored ones.
    """
    config = run.config
    if not (config.get("dataset") == "digits" or config.get("data-dir")):
        return None
    try:
        from .config import parse_run_config
        from .data import partitioner_for
        from .heterogeneity import rebuild_shard_counts

        cfg = parse_run_config(config)
        n = run.results["shards"]["num_partitions"]
        stored = [c["label_counts"] for c in run.results["shards"]["clients"]]
        if rebuild_shard_counts(cfg, n).tolist() != stored:
            return None
        return partitioner_for(cfg, n)
    except Exception:  # older config, moved data, ...: the stored histograms suffice
        return None


def plot_shards(run: Run, path: Path) -> Path:
    """Label-count heatmap of a run's shards (clients on x, classes on y)."""
    shards = run.results["shards"]
    counts = np.array([c["label_counts"] for c in shards["clients"]])  # (K, C)
    k, num_classes = counts.shape
    figsize = (max(5.0, 0.5 * k + 2), max(3.5, 0.35 * num_classes + 1.5))
    title = (
        f"Shards: {run.config.get('dataset')}, Dir(α={run.config.get('dirichlet-alpha')}), "
        f"seed {run.config.get('seed')}, {k} clients"
    )
    partitioner = _rebuilt_partitioner(run)
    fig, ax = plt.subplots(figsize=figsize)
    if partitioner is not None:
        from flwr_datasets.visualization import plot_label_distributions

        plot_label_distributions(
            partitioner,
            label_name="label",
            plot_type="heatmap",
            size_unit="absolute",
            partition_id_axis="x",
            axis=ax,
            title=title,
            legend=True,
            plot_kwargs={"annot": k <= 20},
        )
    else:
        image = ax.imshow(counts.T, aspect="auto", cmap="Greens", origin="upper")
        fig.colorbar(image, ax=ax, label="Count")
        ax.set_xticks(range(k))
        ax.set_yticks(range(num_classes))
        ax.set_title(title)
    ax.set_xlabel("client (partition id)")
    ax.set_ylabel("class")
    return _save(fig, path)


# --------------------------------------------------------------------------- table


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return DASH
    return f"{value:.{digits}f}"


def summary_row(run: Run) -> list[str]:
    """One markdown table row: final central scores, fairness, shards, updates."""
    ev = run.final_eval or {}
    recall = ev.get("per_class_recall") or []
    worst_class = (
        f"{int(np.argmin(recall))} ({min(recall):.3f})" if recall else DASH
    )
    fairness = run.fairness_rounds[-1]["fairness"] if run.fairness_rounds else {}
    shards = (run.results.get("shards") or {}).get("summary", {})
    updates = run.update_rounds[-1]["updates"] if run.update_rounds else {}
    last_round = run.evaluated[-1]["round"] if run.evaluated else DASH
    client_mean = (
        f"{fairness['accuracy_mean']:.3f} ± {fairness['accuracy_std']:.3f}" if fairness else DASH
    )
    return [
        run.name,
        str(run.results.get("status", DASH)),
        str(last_round),
        _fmt(ev.get("accuracy")),
        _fmt(ev.get("balanced_accuracy")),
        _fmt(ev.get("macro_f1")),
        worst_class,
        client_mean,
        _fmt(fairness.get("accuracy_worst")),
        _fmt(fairness.get("accuracy_worst_10pct")),
        _fmt(shards.get("tv_distance_mean")),
        _fmt(shards.get("label_entropy_bits_mean"), 2),
        _fmt(updates.get("cosine_mean")),
        _fmt(run.results.get("elapsed_s"), 0),
    ]


SUMMARY_HEADER = [
    "run", "status", "rounds", "accuracy", "balanced acc.", "macro-F1",
    "worst class (recall)", "client acc. mean ± std", "worst client", "worst 10% clients",
    "shard TV mean", "shard entropy (bits)", "update cos. mean (last round)", "time (s)",
]  # fmt: skip


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def markdown_report(runs: Sequence[Run], figures: dict[str, Path], out: Path) -> str:
    """The report: summary table, per-class recall table, how it was measured, figures."""
    parts = ["# Run comparison", "", _table(SUMMARY_HEADER, [summary_row(r) for r in runs]), ""]
    with_recall = [r for r in runs if (r.final_eval or {}).get("per_class_recall")]
    if with_recall:
        num_classes = max(len(r.final_eval["per_class_recall"]) for r in with_recall)
        rows = [
            [r.name] + [f"{v:.3f}" for v in r.final_eval["per_class_recall"]] for r in with_recall
        ]
        parts += [
            "## Final per-class recall (central test set)",
            "",
            _table(["run"] + [f"class {c}" for c in range(num_classes)], rows),
            "",
        ]
    parts += [
        "## How these numbers were measured",
        "",
        "- accuracy, balanced accuracy, macro-F1, per-class recall: the global model of "
        "the last evaluated round on the dataset's central test split (scikit-learn).",
        "- client accuracy: the global model on each client's local test split "
        "(`local-test-fraction` of its shard, seeded, never trained on) at the last round "
        "with federated evaluation; mean and std over clients (each client counts once), "
        "worst client, mean of the worst 10% of clients (at least one).",
        "- shard TV: total-variation distance (= earth mover's distance with the 0/1 "
        "ground metric) of each client's label distribution from the pooled one, averaged "
        "over clients; entropy of the client label distributions in bits (max log2 C).",
        "- update cosine: cosine of each client update w_k - w_global to the aggregated "
        "update, averaged over the clients of the last round.",
        "",
        "## Figures",
        "",
    ]
    for caption, fig_path in figures.items():
        parts += [f"### {caption}", "", f"![{caption}]({fig_path.relative_to(out)})", ""]
    missing = [r.name for r in runs if not r.fairness_rounds]
    if missing:
        parts += [
            "Runs without federated evaluation (`fairness-eval-every = 0`): "
            + ", ".join(missing),
            "",
        ]
    return "\n".join(parts)


def write_report(run_dirs: Sequence[str | Path], out: str | Path) -> dict[str, Path]:
    """Write all figures and ``report.md`` to ``out``; return what was written by caption."""
    runs = load_runs(run_dirs)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Path] = {}
    candidates = {
        "Accuracy and balanced accuracy per round": plot_accuracy_curves(runs, out / ACCURACY_FILE),
        "Final per-class recall": plot_per_class_recall(runs, out / RECALL_FILE),
        "Per-client accuracy": plot_client_accuracy(runs, out / CLIENT_FILE),
        "Update cosine per round": plot_update_cosine(runs, out / COSINE_FILE),
    }
    figures.update({k: v for k, v in candidates.items() if v is not None})
    seen: set[tuple] = set()
    for run in runs:
        key = shard_key(run)
        if key is None or key in seen:
            continue
        seen.add(key)
        dataset, _, alpha, _, seed, n = key
        name = f"shards-{dataset}-a{alpha:g}-s{seed}-n{n}.png"
        if any(p.name == name for p in figures.values()):  # same name, other data-dir
            name = f"shards-{dataset}-a{alpha:g}-s{seed}-n{n}-{len(seen)}.png"
        figures[f"Shard labels ({run.name})"] = plot_shards(run, out / name)
    report = out / MARKDOWN_FILE
    report.write_text(markdown_report(runs, figures, out))
    return {**figures, "report": report}


def main(argv: Sequence[str] | None = None) -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m fedfocal_app.report",
        description="Compare fedfocal_app runs: figures and a markdown table.",
    )
    parser.add_argument("run_dirs", nargs="+", help="run folders holding results.json")
    parser.add_argument("--out", default="report", help="output folder (default: report/)")
    args = parser.parse_args(argv)
    missing = [d for d in args.run_dirs if not (Path(d) / "results.json").is_file()]
    if missing:
        parser.error("no results.json in: " + ", ".join(missing))
    written = write_report(args.run_dirs, args.out)
    for path in written.values():
        print(path)


if __name__ == "__main__":
    main()
