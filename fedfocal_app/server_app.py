"""ServerApp: validate the run config, build the strategy, evaluate centrally, record."""

from __future__ import annotations

import io
import random
from logging import INFO

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord, RecordDict
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg, FedProx
from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords
from flwr.supercore import log

from .config import RunConfig, parse_run_config
from .data import load_test_set
from .models import build_model
from .outputs import RunRecorder, default_run_name, resolve_run_dir
from .strategy import FedFocal
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
            "loss": cfg.loss,
            "focal-gamma": cfg.focal_gamma,
            "focal-alpha": cfg.focal_alpha,
        }
    )


def make_strategy(cfg: RunConfig, recorder: RunRecorder | None = None) -> FedAvg:
    """FedFocal, or Flower's own FedAvg / FedProx as baselines, from the run config."""

    def train_metrics(contents: list[RecordDict], key: str) -> MetricRecord:
        aggregated = aggregate_metricrecords(contents, key)
        if recorder is not None:
            clients = [dict(next(iter(c.metric_records.values()))) for c in contents]
            recorder.record_train(dict(aggregated), clients)
        return aggregated

    common = {
        "fraction_train": cfg.fraction_train,
        "fraction_evaluate": 0.0,  # evaluation is central, on the server
        # Flower's FedAvg sizes the sample from the nodes connected BEFORE it waits for
        # `min_available_nodes`: a round that had to wait (a node restarting) would
        # train fewer nodes than are then connected. The floor keeps the fraction of
        # the minimum; with the default minimum of 1 it is 1, as before.
        "min_train_nodes": max(1, int(cfg.fraction_train * cfg.min_available_nodes)),
        "min_evaluate_nodes": 0,
        "min_available_nodes": cfg.min_available_nodes,
        "train_metrics_aggr_fn": train_metrics,
    }
    if cfg.strategy == "fedfocal":
        return FedFocal(
            focal_gamma=cfg.focal_gamma,
            aggregation_gamma=cfg.aggregation_gamma,
            sampling=cfg.sampling,
            sampling_mix=cfg.focal_sampling_mix,
            seed=cfg.seed,
            **common,
        )
    if cfg.strategy == "fedprox":
        return FedProx(proximal_mu=cfg.proximal_mu, **common)
    return FedAvg(**common)


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run ``num-server-rounds`` of the configured strategy with central evaluation."""
    cfg = parse_run_config(context.run_config)  # bad config fails here, before training
    match_torch_threads()
    random.seed(cfg.seed)  # Flower's uniform client sampling draws from `random`
    device = pick_device()
    test_set = load_test_set(cfg)
    model = build_model(cfg.resolved_model, seed=cfg.seed)

    run_dir = resolve_run_dir(cfg.output_dir, cfg.run_name or default_run_name(cfg.to_dict()))
    title = f"{cfg.strategy} / {cfg.loss} loss / Dir({cfg.dirichlet_alpha:g}) / seed {cfg.seed}"
    recorder = RunRecorder(run_dir, cfg.to_dict(), title)
    log(INFO, "fedfocal: writing results to %s", run_dir)

    def central_evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        model.load_state_dict(arrays.to_torch_state_dict())
        metrics = evaluate(model.to(device), test_set, device)
        recorder.record_round(server_round, metrics)
        log(
            INFO,
            "fedfocal round %d: loss %.4f | accuracy %.4f | balanced accuracy %.4f "
            "| macro-F1 %.4f",
            server_round,
            metrics["loss"],
            metrics["accuracy"],
            metrics["balanced_accuracy"],
            metrics["macro_f1"],
        )
        return MetricRecord(metrics)

    strategy = make_strategy(cfg, recorder)
    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(model.state_dict()),
        num_rounds=cfg.num_server_rounds,
        timeout=cfg.round_timeout,
        train_config=train_config_record(cfg),
        evaluate_fn=central_evaluate,
    )
    buffer = io.BytesIO()
    torch.save(result.arrays.to_torch_state_dict(), buffer)
    recorder.finish(buffer.getvalue())
    log(INFO, "fedfocal: finished; results in %s", run_dir)
