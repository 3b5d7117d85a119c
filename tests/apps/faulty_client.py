"""A ClientApp that misbehaves by partition id, for fault tests.

With run config ``fault-mode = "misbehave"``: partition 0 raises; 1 replies NaN
weights; 2 wrong shapes; 3 no pre_train_loss; 4 claims 10**12 examples; the others
behave. With ``fault-mode = "crash"`` partitions 0-4 all raise: the same run with
only the good replies, to compare against.
"""

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedfocal_app.client_app import train_on_shard

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    pid = int(context.node_config["partition-id"])
    if pid == 0 or (pid <= 4 and context.run_config["fault-mode"] == "crash"):
        raise RuntimeError("injected fault: client crashed")
    good = train_on_shard(msg, context)
    arrays = {k: v.numpy() for k, v in good.content["arrays"].items()}
    metrics = dict(good.content["metrics"])
    if pid == 1:
        first = next(iter(arrays))
        arrays[first] = np.full_like(arrays[first], np.nan)
    elif pid == 2:
        first = next(iter(arrays))
        arrays[first] = np.zeros((3, 3), dtype=arrays[first].dtype)
    elif pid == 3:
        del metrics["pre_train_loss"]
    elif pid == 4:
        metrics["num-examples"] = 10**12
    content = RecordDict(
        {
            "arrays": ArrayRecord({k: Array(v) for k, v in arrays.items()}),
            "metrics": MetricRecord(metrics),
        }
    )
    return Message(content=content, reply_to=msg)
