"""Run outputs: ``results.json`` after every round, final model, accuracy plot.

A run folder holds everything needed to read a result later: the resolved run config,
package versions, hardware, seeds, and per-round train/eval metrics with wall times.
"""

from __future__ import annotations

import io
import json
import os
import platform
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from .config import ConfigError

RESULTS_FILE = "results.json"
MODEL_FILE = "model.pt"
PLOT_FILE = "accuracy.png"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see the old or the new file, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    """JSON version of :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, json.dumps(obj, indent=2, allow_nan=False).encode())


def environment_info() -> dict[str, Any]:
    """Versions and hardware, stored with every result."""
    import torch  # local: keep module import light for the report command

    versions = {}
    for pkg in ("flwr", "flwr-datasets", "torch", "torchvision", "numpy", "scikit-learn"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {
        "versions": versions,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def resolve_run_dir(output_dir: str, run_name: str) -> Path:
    """``output_dir/run_name`` as an absolute path (relative to the working directory)."""
    return (Path(output_dir).expanduser() / run_name).resolve()


def default_run_name(cfg_dict: dict[str, Any]) -> str:
    """``<timestamp>-<strategy>-<loss>-a<alpha>-s<seed>``, unique per second."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return (
        f"{stamp}-{cfg_dict['strategy']}-{cfg_dict['loss']}"
        f"-a{cfg_dict['dirichlet-alpha']:g}-s{cfg_dict['seed']}"
    )


def plot_accuracy(rounds: list[dict[str, Any]], path: Path, title: str) -> None:
    """Accuracy and balanced accuracy of the global model per round (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    evaluated = [r for r in rounds if r.get("eval")]
    xs = [r["round"] for r in evaluated]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(xs, [r["eval"]["accuracy"] for r in evaluated], marker="o", label="accuracy")
    ax.plot(
        xs,
        [r["eval"]["balanced_accuracy"] for r in evaluated],
        marker="s",
        label="balanced accuracy",
    )
    ax.set_xlabel("server round")
    ax.set_ylabel("central test score (fraction correct)")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def load_results(run_dir: str | Path) -> dict[str, Any]:
    """Read a run folder's ``results.json``."""
    return json.loads((Path(run_dir) / RESULTS_FILE).read_text())


class RunRecorder:
    """Collects per-round metrics and rewrites ``results.json`` after every round."""

    def __init__(
        self,
        run_dir: Path,
        config: dict[str, Any],
        title: str,
        resumed: dict[str, Any] | None = None,
    ) -> None:
        self.run_dir = run_dir
        self.title = title
        if resumed is None:
            self.results: dict[str, Any] = {
                "status": "running",
                "run_dir": str(run_dir),
                "config": config,
                "environment": environment_info(),
                "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "rounds": [],
            }
        else:  # a resumed run continues the same results, noting when it resumed
            self.results = resumed
            self.results["status"] = "running"
            self.results["config"] = config
            self.results.setdefault("resumed_at", []).append(
                {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "after_round": len(resumed["rounds"]) - 1}
            )
        self._pending_train: dict[str, Any] = {}
        self._pending_extra: dict[str, Any] = {}  # e.g. "fairness", "updates"
        self._t_last = time.perf_counter()
        self._t_start = self._t_last - self.results.get("elapsed_s", 0.0)

    def record_train(self, aggregated: dict[str, Any], clients: list[dict[str, Any]]) -> None:
        """Keep the round's aggregated and per-client train metrics until its eval."""
        self._pending_train = {"train": aggregated, "clients": clients}

    def record_run_item(self, key: str, value: Any) -> None:
        """Store a run-level item (e.g. ``"shards"``) and rewrite ``results.json``."""
        self.results[key] = value
        self.write()

    def record_round_item(self, key: str, value: Any) -> None:
        """Keep an item (e.g. ``"fairness"``) for the round that closes next."""
        self._pending_extra[key] = value

    def record_round(self, server_round: int, eval_metrics: dict[str, Any]) -> None:
        """Close a round (0 = initial model) and rewrite ``results.json``."""
        now = time.perf_counter()
        entry = {
            "round": server_round,
            "eval": eval_metrics,
            **self._pending_train,
            **self._pending_extra,
            "wall_time_s": now - self._t_last,
        }
        self._pending_train, self._pending_extra = {}, {}
        self._t_last = now
        self.results["rounds"].append(entry)
        self.results["elapsed_s"] = now - self._t_start
        self.write()

    def write(self) -> None:
        """Atomically rewrite ``results.json``."""
        atomic_write_json(self.run_dir / RESULTS_FILE, self.results)

    def finish(self, state_dict_bytes: bytes) -> None:
        """Save the final model and the plot, mark the run finished."""
        atomic_write_bytes(self.run_dir / MODEL_FILE, state_dict_bytes)
        plot_accuracy(self.results["rounds"], self.run_dir / PLOT_FILE, self.title)
        self.results["status"] = "finished"
        self.write()


CHECKPOINT_FILE = "checkpoint.pt"
# Keys that may differ between a run and its resumption; all others must match.
RESUMABLE_CHANGES = frozenset(
    {"resume-from", "num-server-rounds", "round-timeout", "node-wait-timeout", "output-dir", "run-name"}
)


def save_checkpoint(run_dir: Path, state: dict[str, Any]) -> None:
    """Atomically write the round's checkpoint (global arrays, strategy, RNG, metrics)."""
    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(run_dir / CHECKPOINT_FILE, buffer.getvalue())


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (our own file: full unpickle)."""
    import torch

    return torch.load(path, map_location="cpu", weights_only=False)


def find_checkpoint(resume_from: str, output_dir: str) -> Path | None:
    """The checkpoint ``resume-from`` names: none, the newest unfinished, or a folder's."""
    if not resume_from:
        return None
    if resume_from == "latest":
        candidates = [
            p
            for p in Path(output_dir).expanduser().resolve().glob(f"*/{CHECKPOINT_FILE}")
            if not _finished(p.parent)
        ]
        if not candidates:
            raise ConfigError(
                f"run config 'resume-from' = 'latest' is invalid: no unfinished run with a "
                f"checkpoint in output-dir {Path(output_dir).resolve()}"
            )
        return max(candidates, key=lambda p: p.stat().st_mtime)
    path = Path(resume_from).expanduser().resolve()
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    if not path.is_file():
        raise ConfigError(
            f"run config 'resume-from' = {resume_from!r} is invalid: no checkpoint at {path}"
        )
    return path


def check_resumable(saved: dict[str, Any], current: dict[str, Any]) -> None:
    """Refuse to resume a run under a different configuration."""
    changed = sorted(
        k for k in set(saved) | set(current)
        if k not in RESUMABLE_CHANGES and saved.get(k) != current.get(k)
    )
    if changed:
        diffs = ", ".join(f"'{k}': {saved.get(k)!r} -> {current.get(k)!r}" for k in changed)
        raise ConfigError(
            f"run config 'resume-from' is invalid: the checkpoint was made with a different "
            f"configuration ({diffs}); only {sorted(RESUMABLE_CHANGES)} may change"
        )


def _finished(run_dir: Path) -> bool:
    try:
        return load_results(run_dir).get("status") == "finished"
    except (OSError, ValueError):
        return False
