"""Hand-built reply Messages, as a SuperLink would deliver them to a strategy."""

from __future__ import annotations

import time

import numpy as np
from flwr.app import Array, ArrayRecord, Error, Message, MetricRecord, RecordDict
from flwr.app import Metadata


def reply(node_id: int, arrays: dict[str, np.ndarray], metrics: dict) -> Message:
    """A train reply from ``node_id`` with one ArrayRecord and one MetricRecord."""
    content = RecordDict(
        {
            "arrays": ArrayRecord({k: Array(v) for k, v in arrays.items()}),
            "metrics": MetricRecord(metrics),
        }
    )
    return from_content(node_id, content)


def from_content(node_id: int, content: RecordDict) -> Message:
    """Wrap arbitrary ``content`` (valid or not) in a reply from ``node_id``."""
    return Message(content=content, metadata=_metadata(node_id))


def failed(node_id: int, reason: str) -> Message:
    """The reply Flower delivers when a ClientApp raised."""
    return Message(error=Error(code=0, reason=reason), metadata=_metadata(node_id))


def _metadata(node_id: int) -> Metadata:
    return Metadata(
        run_id=1,
        message_id=f"m{node_id}",
        src_node_id=node_id,
        dst_node_id=0,
        reply_to_message_id="i",
        group_id="1",
        created_at=time.time(),
        ttl=60.0,
        message_type="train",
    )
