"""Feast's online values decoded into columns: a view's rows for N ids as numpy arrays
(``ItemRows``), from the serialised ValueProtos the online store holds (``mmfs.online.rows``),
vectors and scalars of many rows decoded together rather than one Python object per value.

Units: ``stamps_us`` are event times in microseconds since the epoch (``MISSING_US`` where the
store has no row); vectors are float32, scalars float64.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from feast.protos.feast.types.Value_pb2 import FloatList, Value as ValueProto

from mmfs.online.reader import float_list
from mmfs.online.rows import RawRows


@dataclass
class ItemRows:
    """One item view's rows for a list of ids, in the ids' order (duplicates allowed)."""

    values: dict[str, np.ndarray]  # vector feature -> (N, D) float32, zeros where absent; scalar -> (N,) float64, 0 where absent
    found: dict[str, np.ndarray]  # feature -> (N,) bool: the row holds the feature (a vector of the expected length)
    stamps_us: np.ndarray  # (N,) int64 event time, microseconds since the epoch; MISSING_US where the store has no row

    def take(self, index: np.ndarray) -> "ItemRows":
        """The rows at ``index``, in that order."""
        return ItemRows({f: v[index] for f, v in self.values.items()}, {f: m[index] for f, m in self.found.items()},
                        self.stamps_us[index])


def decode_rows(raw: RawRows, features: dict[str, int]) -> ItemRows:
    """A view's ``RawRows`` -> ``ItemRows``; ``features`` maps each wanted feature to its vector
    length (0 for a scalar)."""
    values, found = {}, {}
    for f, dim in features.items():
        values[f], found[f] = float_lists(raw.values[f], dim) if dim else scalars(raw.values[f])
    return ItemRows(values, found, np.asarray(raw.stamps_us, np.int64))


@lru_cache(maxsize=64)
def _float_list_header(dim: int) -> bytes:
    """The bytes before the floats in a serialised ValueProto holding ``dim`` floats."""
    return ValueProto(float_list_val=FloatList(val=[0.0] * dim)).SerializeToString()[: -4 * dim]


def float_lists(blobs: list[bytes | None], dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, dim) float32 vectors and their (N,) found mask from serialised ``float_list_val``
    ValueProtos, decoded together: every blob of the expected size and header is one row of one
    byte matrix, its floats read in place. Anything else is parsed alone; a vector of another
    length is not found."""
    n = len(blobs)
    out, found = np.zeros((n, dim), np.float32), np.zeros(n, bool)
    header = _float_list_header(dim)
    size = len(header) + 4 * dim
    lengths = np.fromiter((len(b) if b is not None else 0 for b in blobs), np.int64, n)
    at = np.flatnonzero(lengths == size)
    if at.size:
        block = np.frombuffer(b"".join([blobs[k] for k in at.tolist()]), np.uint8).reshape(at.size, size)  # (m, size)
        ok = (block[:, : len(header)] == np.frombuffer(header, np.uint8)).all(axis=1)
        out[at[ok]] = block[ok, len(header):].copy().view(np.float32)  # (m, dim)
        found[at[ok]] = True
    for k in np.flatnonzero((lengths > 0) & ~found).tolist():  # another encoding or length: parsed alone
        vector = float_list(ValueProto.FromString(blobs[k]))
        if vector is not None and vector.shape[0] == dim:
            out[k], found[k] = vector, True
    return out, found


FIXED_SCALARS = {0x35: (5, np.float32), 0x29: (9, np.float64)}  # float_val, double_val: tag byte -> (size, dtype)
NUMERIC_KINDS = ("int64_val", "int32_val", "float_val", "double_val", "bool_val")
VARINT_SCALARS = (0x20, 0x18, 0x38)  # int64_val, int32_val, bool_val (field numbers 4, 3, 7, wire type 0)


def scalars(blobs: list[bytes | None]) -> tuple[np.ndarray, np.ndarray]:
    """(N,) float64 values and their found mask from serialised scalar ValueProtos, decoded
    together by their tag byte and size (one numpy pass per kind and length). Anything else is
    parsed alone; a list or a string is not a scalar."""
    n = len(blobs)
    values, found = np.zeros(n), np.zeros(n, bool)
    lengths = np.fromiter((len(b) if b is not None else 0 for b in blobs), np.int64, n)
    for size in np.unique(lengths[lengths > 1]).tolist():
        at = np.flatnonzero(lengths == size)
        block = np.frombuffer(b"".join([blobs[k] for k in at.tolist()]), np.uint8).reshape(at.size, size)  # (m, size)
        for tag, (fixed, dtype) in FIXED_SCALARS.items():
            rows = at[block[:, 0] == tag] if fixed == size else at[:0]
            if rows.size:
                values[rows] = block[block[:, 0] == tag, 1:].copy().view(dtype)[:, 0]
                found[rows] = True
        varint = np.isin(block[:, 0], VARINT_SCALARS) & (block[:, -1] < 0x80) & (block[:, 1:-1] >= 0x80).all(axis=1)
        if varint.any():  # base-128 digits, low first; ten bytes: a negative int64
            digits = (block[varint, 1:].astype(np.uint64) & np.uint64(0x7F)) << (np.uint64(7) * np.arange(size - 1, dtype=np.uint64))
            values[at[varint]] = np.bitwise_or.reduce(digits, axis=1).view(np.int64)
            found[at[varint]] = True
    for k in np.flatnonzero((lengths > 0) & ~found).tolist():  # another kind or encoding: parsed alone
        proto = ValueProto.FromString(blobs[k])
        kind = proto.WhichOneof("val")
        if kind in NUMERIC_KINDS:
            values[k], found[k] = getattr(proto, kind), True
    return values, found
