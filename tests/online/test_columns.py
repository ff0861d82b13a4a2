"""Feast's serialised values decoded into columns, on tiny inline blobs (no store)."""
import numpy as np
from feast.protos.feast.types.Value_pb2 import FloatList, Value

from mmfs.online.columns import float_lists, scalars


def blob(values) -> bytes:
    return Value(float_list_val=FloatList(val=values)).SerializeToString()


def test_vectors_decode_together_and_other_lengths_or_kinds_are_not_found():
    blobs = [blob([1.0, 2.0, 3.0]), None, blob([1.0, 2.0]), Value(int64_val=7).SerializeToString(), blob([-0.5, 0.0, 4.25])]
    out, found = float_lists(blobs, 3)
    assert found.tolist() == [True, False, False, False, True]
    assert out.tolist() == [[1, 2, 3], [0, 0, 0], [0, 0, 0], [0, 0, 0], [-0.5, 0, 4.25]]
    # 128 floats: a two-byte length in the header
    wide = np.linspace(-1, 1, 128, dtype=np.float32)
    out, found = float_lists([blob(wide.tolist())], 128)
    assert found.all() and np.array_equal(out[0], wide)


def test_scalars_decode_and_lists_are_not_scalars():
    values, found = scalars([Value(int64_val=5).SerializeToString(), None, Value(float_val=0.25).SerializeToString(), blob([1.0])])
    assert values.tolist() == [5, 0, 0.25, 0] and found.tolist() == [True, False, True, False]
