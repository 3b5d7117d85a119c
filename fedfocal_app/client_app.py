"""ClientApp: unpack the message, train on the local shard, pack the reply."""

from __future__ import annotations

import time

import numpy as np
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from .config import RunConfig, parse_run_config
from .data import Shard, local_splits
from .models import build_model
from .node_data import load_node_shard
from .training import (
    TrainSettings,
    match_torch_threads,
    mean_cross_entropy,
    pick_device,
    predict,
    train,
)

app = ClientApp()


def node_splits(cfg: RunConfig, context: Context) -> tuple[int, Shard, Shard | None]:
    """This node's data-order id, training shard and local test split (None when off).

    The id is the partition id; a node with its own data has none and uses its node id.
    """
    partition_id = int(context.node_config.get("partition-id", context.node_id))
    shard = load_node_shard(cfg, context.node_config)  # own data / disk cache / memory
    train_part, local_test = local_splits(cfg, shard, partition_id)
    return partition_id, train_part, local_test


@app.train()
def train_on_shard(msg: Message, context: Context) -> Message:
    """Train the received global model on this node's shard.

    Reply: one ArrayRecord (the local model) and one MetricRecord with
    ``num-examples``, ``train_loss`` and ``pre_train_loss`` (mean cross-entropy of the
    *received* global model on the shard, before any local step: FedFocal's L_k).
    """
    cfg = parse_run_config(context.run_config)
    settings = TrainSettings.from_config(msg.content["config"])

    match_torch_threads()
    device = pick_device()
    partition_id, shard, _ = node_splits(cfg, context)  # never trains on the local test split
    model = build_model(cfg.resolved_model)
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    model.to(device)

    pre_train_loss = mean_cross_entropy(model, shard, device)
    # One data-order seed per (run seed, round, partition): reruns reproduce exactly.
    order_seed = int(
        np.random.SeedSequence([cfg.seed, settings.server_round, partition_id]).generate_state(1)[0]
    )
    t0 = time.perf_counter()
    train_loss = train(model, shard, settings, device, seed=order_seed)
    train_time = time.perf_counter() - t0

    content = RecordDict(
        {
            "arrays": ArrayRecord(model.cpu().state_dict()),
            "metrics": MetricRecord(
                {
                    "num-examples": len(shard),
                    "train_loss": train_loss,
                    "pre_train_loss": pre_train_loss,
                    "train_time_s": train_time,  # local training only: for throughput
                }
            ),
        }
    )
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate_on_local_test(msg: Message, context: Context) -> Message:
    """Evaluate the received global model on this node's local test split.

    Sent only when ``fairness-eval-every > 0``. Reply: one MetricRecord with
    ``num-examples`` (size of the local test split), ``accuracy`` and ``loss``
    (mean cross-entropy).
    """
    cfg = parse_run_config(context.run_config)
    match_torch_threads()
    device = pick_device()
    _, _, local_test = node_splits(cfg, context)
    if local_test is None:
        raise RuntimeError("federated evaluation needs fairness-eval-every > 0")
    model = build_model(cfg.resolved_model)
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    from sklearn.metrics import accuracy_score  # only the evaluate path needs it

    loss, y_pred = predict(model.to(device), local_test, device)
    accuracy = float(accuracy_score(local_test.y.numpy(), y_pred))

    metrics = MetricRecord({"num-examples": len(local_test), "accuracy": accuracy, "loss": loss})
    return Message(content=RecordDict({"metrics": metrics}), reply_to=msg)
