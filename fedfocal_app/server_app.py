"""ServerApp: validate the run config, build the strategy, evaluate centrally, record.

Every round ends with ``results.json`` and an atomic checkpoint in the run folder;
``resume-from`` continues a killed run from its last checkpoint.
"""

from __future__ import annotations

import io
import random
from logging import INFO, WARNING
from pathlib import Path

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord, RecordDict
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords
from flwr.supercore import log

from .config import RunConfig, parse_run_config
from .data import load_test_set
from .heterogeneity import (
    UpdateTracker,
    fairness_record,
    fairness_summary_line,
    rebuild_shard_counts,
    shard_statistics,
    shard_summary_line,
)
from .models import build_model
from .outputs import (
    RunRecorder,
    check_resumable,
    default_run_name,
    find_checkpoint,
    load_checkpoint,
    resolve_run_dir,
    save_checkpoint,
)
from .strategy import AppFedAvg, AppFedProx, AppStrategyMixin, FedFocal
from .training import evaluate, match_torch_threads, pick_device

app = ServerApp()


def train_config_record(cfg: RunConfig) -> ConfigRecord:
    """What every client is told each round (the strategy may add to it)."""
    return ConfigRecord(
        {
            "local-epochs": cfg.local_epochs,
            "batch-size": cfg.batch_size,
            "lr": cfg.learning_rate,
            "momentum": cfg.momentum,
            "weight-decay": cfg.weight_decay,
            "augment": cfg.augment,
            "loss": cfg.loss,
            "focal-gamma": cfg.focal_gamma,
            "focal-alpha": cfg.focal_alpha,
        }
    )


def make_strategy(
    cfg: RunConfig, recorder: RunRecorder | None = None, updates: UpdateTracker | None = None
) -> FedAvg:
    """FedFocal, or Flower's own FedAvg / FedProx as baselines, from the run config."""

    def train_metrics(contents: list[RecordDict], key: str) -> MetricRecord:
        aggregated = aggregate_metricrecords(contents, key)
        if recorder is not None:
            clients = [dict(next(iter(c.metric_records.values()))) for c in contents]
            recorder.record_train(dict(aggregated), clients)
        if updates is not None:
            updates.observe_clients(contents)  # update cosines need the client models
        return aggregated

    def evaluate_metrics(contents: list[RecordDict], key: str) -> MetricRecord:
        fairness = fairness_record(contents)
        log(INFO, "fedfocal fairness: %s", fairness_summary_line(fairness))
        if recorder is not None:
            recorder.record_round_item("fairness", fairness)
        return aggregate_metricrecords(contents, key)

    fairness = cfg.fairness_eval_every > 0
    common = {
        "fraction_train": cfg.fraction_train,
        # Model quality is evaluated centrally on the server; federated evaluation
        # (every node, on its local test split) runs only for the fairness report.
        "fraction_evaluate": 1.0 if fairness else 0.0,
        "min_train_nodes": 1,
        "min_evaluate_nodes": 1 if fairness else 0,
        "min_available_nodes": cfg.min_available_nodes,
        "train_metrics_aggr_fn": train_metrics,
        "evaluate_metrics_aggr_fn": evaluate_metrics,
    }
    strategy: AppStrategyMixin
    if cfg.strategy == "fedfocal":
        strategy = FedFocal(
            focal_gamma=cfg.focal_gamma,
            aggregation_gamma=cfg.aggregation_gamma,
            sampling=cfg.sampling,
            sampling_mix=cfg.focal_sampling_mix,
            seed=cfg.seed,
            **common,
        )
    elif cfg.strategy == "fedprox":
        strategy = AppFedProx(proximal_mu=cfg.proximal_mu, **common)
    else:
        strategy = AppFedAvg(**common)
    strategy.max_client_weight = cfg.max_client_weight
    strategy.min_valid_replies = cfg.min_valid_replies
    strategy.max_num_examples = cfg.max_num_examples
    strategy.node_wait_timeout = cfg.node_wait_timeout
    strategy.evaluate_every = cfg.fairness_eval_every  # AppStrategyMixin skips other rounds
    return strategy  # type: ignore[return-value]


def record_shard_statistics(cfg: RunConfig, grid: Grid, recorder: RunRecorder) -> None:
    """Rebuild the clients' Dirichlet shards on the server; store and log their stats.

    Uses the simulation convention that node ``i`` of ``N`` connected nodes holds
    shard ``i`` of ``N``. Nodes reading their own data (deployment) hold shards the
    server cannot know: run them with ``shard-stats = false``.
    """
    num_nodes = len(list(grid.get_node_ids()))
    try:
        stats = shard_statistics(rebuild_shard_counts(cfg, num_nodes))
    except Exception as err:  # a diagnostic must never stop the training it describes
        log(WARNING, "fedfocal: shard statistics skipped (%s nodes): %s", num_nodes, err)
        return
    recorder.record_run_item("shards", stats)
    log(INFO, "fedfocal shards: %s", shard_summary_line(stats))


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run ``num-server-rounds`` of the configured strategy with central evaluation."""
    cfg = parse_run_config(context.run_config)  # bad config fails here, before training
    checkpoint_path = find_checkpoint(cfg.resume_from, cfg.output_dir)
    match_torch_threads()
    random.seed(cfg.seed)  # Flower's uniform client sampling draws from `random`
    device = pick_device()
    test_set = load_test_set(cfg)
    model = build_model(cfg.resolved_model, seed=cfg.seed)
    initial_arrays = ArrayRecord(model.state_dict())
    title = f"{cfg.strategy} / {cfg.loss} loss / Dir({cfg.dirichlet_alpha:g}) / seed {cfg.seed}"

    checkpoint = None
    if checkpoint_path is not None:
        checkpoint = load_checkpoint(checkpoint_path)
        check_resumable(checkpoint["config"], cfg.to_dict())
        run_dir = checkpoint_path.parent
        recorder = RunRecorder(run_dir, cfg.to_dict(), title, resumed=checkpoint["results"])
    else:
        run_name = cfg.run_name or default_run_name(cfg.to_dict())
        run_dir = resolve_run_dir(cfg.output_dir, run_name)
        recorder = RunRecorder(run_dir, cfg.to_dict(), title)
    updates = UpdateTracker()
    strategy = make_strategy(cfg, recorder, updates)
    done = 0
    if checkpoint is not None:
        done = int(checkpoint["round"])
        initial_arrays = ArrayRecord(checkpoint["arrays"])
        strategy.load_state_dict(checkpoint["strategy"])
        strategy.round_offset = done
        random.setstate(checkpoint["python_random"])
        log(INFO, "fedfocal: resuming %s after round %d", run_dir, done)
    log(INFO, "fedfocal: writing results to %s", run_dir)
    if cfg.shard_stats and "shards" not in recorder.results:
        record_shard_statistics(cfg, grid, recorder)

    def central_evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        model.load_state_dict(arrays.to_torch_state_dict())
        metrics = evaluate(model.to(device), test_set, device)
        true_round = server_round + done
        update_stats = updates.observe_global(arrays)
        if server_round == 0 and done:  # a resumed run: round `done` is recorded already
            return MetricRecord(metrics)
        if update_stats is not None:
            recorder.record_round_item("updates", update_stats)
            log(
                INFO,
                "fedfocal round %d: update cosine to aggregate mean %.3f, min %.3f",
                true_round,
                update_stats["cosine_mean"],
                update_stats["cosine_min"],
            )
        recorder.record_round_item("replies", getattr(strategy, "round_report", None))
        recorder.record_round(true_round, metrics)
        save_checkpoint(
            run_dir,
            {
                "round": true_round,
                "arrays": arrays.to_torch_state_dict(),
                "strategy": strategy.state_dict(),
                "python_random": random.getstate(),
                "config": cfg.to_dict(),
                "results": recorder.results,
            },
        )
        log(
            INFO,
            "fedfocal round %d: loss %.4f | accuracy %.4f | balanced accuracy %.4f "
            "| macro-F1 %.4f",
            true_round,
            metrics["loss"],
            metrics["accuracy"],
            metrics["balanced_accuracy"],
            metrics["macro_f1"],
        )
        return MetricRecord(metrics)

    remaining = cfg.num_server_rounds - done
    final_arrays = initial_arrays
    if remaining > 0:
        result = strategy.start(
            grid=grid,
            initial_arrays=initial_arrays,
            num_rounds=remaining,
            timeout=cfg.round_timeout,
            train_config=train_config_record(cfg),
            evaluate_fn=central_evaluate,
        )
        # Result.arrays stays empty when no round produced an aggregate.
        final_arrays = result.arrays if len(result.arrays) else initial_arrays
    buffer = io.BytesIO()
    torch.save(final_arrays.to_torch_state_dict(), buffer)
    recorder.finish(buffer.getvalue())
    log(INFO, "fedfocal: finished; results in %s", Path(run_dir))
