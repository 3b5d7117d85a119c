"""ClientApp: unpack the message, train on the local shard, pack the reply."""

from __future__ import annotations

import numpy as np
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from .config import parse_run_config
from .models import build_model
from .node_data import load_node_shard
from .training import (
    TrainSettings,
    match_torch_threads,
    mean_cross_entropy,
    pick_device,
    train,
)

app = ClientApp()


@app.train()
def train_on_shard(msg: Message, context: Context) -> Message:
    """Train the received global model on this node's shard.

    Reply: one ArrayRecord (the local model) and one MetricRecord with
    ``num-examples``, ``train_loss`` and ``pre_train_loss`` (mean cross-entropy of the
    *received* global model on the shard, before any local step: FedFocal's L_k).
    """
    cfg = parse_run_config(context.run_config)
    # Data-order seed: the partition id; a node with its own data has none, its id.
    partition_id = int(context.node_config.get("partition-id", context.node_id))
    settings = TrainSettings.from_config(msg.content["config"])

    match_torch_threads()
    device = pick_device()
    shard = load_node_shard(cfg, context.node_config)  # own data / disk cache / memory
    model = build_model(cfg.resolved_model)
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    model.to(device)

    pre_train_loss = mean_cross_entropy(model, shard, device)
    # One data-order seed per (run seed, round, partition): reruns reproduce exactly.
    order_seed = int(
        np.random.SeedSequence([cfg.seed, settings.server_round, partition_id]).generate_state(1)[0]
    )
    train_loss = train(model, shard, settings, device, seed=order_seed)

    content = RecordDict(
        {
            "arrays": ArrayRecord(model.cpu().state_dict()),
            "metrics": MetricRecord(
                {
                    "num-examples": len(shard),
                    "train_loss": train_loss,
                    "pre_train_loss": pre_train_loss,
                }
            ),
        }
    )
    return Message(content=content, reply_to=msg)
