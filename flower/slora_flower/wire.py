"""States on the wire: the pipeline's trainable states (dicts of float32 arrays keyed by the
project's tensor names) as Flower ArrayRecords, and what a message weighs as Flower sends it."""

import numpy as np
from flwr.app import Array, ArrayRecord, Message
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects


def to_record(state: dict) -> ArrayRecord:
    """A state as an ArrayRecord, one Array per tensor, in name order."""
    return ArrayRecord({name: Array(np.ascontiguousarray(state[name])) for name in sorted(state)})


def from_record(record: ArrayRecord) -> dict:
    """An ArrayRecord as a state. Anything but float32 is refused here, by name."""
    state = {}
    for name, array in record.items():
        values = array.numpy()
        if values.dtype != np.float32:
            raise ValueError(f"`{name}` is {values.dtype}, not float32")
        state[name] = values
    return state


def message_bytes(message: Message) -> int:
    """Bytes of `message` as Flower serialises it for the wire: every object of its tree (message,
    records, arrays, array chunks) deflated, headers included; gRPC and TLS framing excluded."""
    return sum(len(obj.deflate()) for obj in get_all_nested_objects(message).values())
