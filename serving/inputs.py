"""What a request brings to the model, checked and assembled: the candidate ids (``candidate_ids``:
a bad request is a ``BadRequest``, never a server error), the flags each value's online status
earns (``status_flag``, used by ``user_flags`` and ``item_flags``: stale, future, missing), and the model's input blocks from online
rows (``vector_fields``: fresh vectors only, zeros elsewhere; ``item_stats_fields``). The scorer's
``prepare`` composes them with the ``mmfs.model.batch`` functions the training loader uses.

Shapes: C candidates, H history items, L = max(H, 1) padded history length, D vector length.
"""
from __future__ import annotations

import datetime as dt

import numpy as np

from mmfs.model.batch import ITEM_STATS_COLUMNS, stats_fields, vector_fields as batch_vector_fields
from mmfs.online.columns import ItemRows
from mmfs.online.reader import (FUTURE, MISSING, MISSING_CODE, PRESENT_CODE, STALE, STALE_CODE, STATUS_NAMES, OnlineReader,
                                ViewRows)
from mmfs.core.contracts.names import USER_SEQUENCE_VIEW as SEQUENCE_VIEW, USER_STATS_VIEW

INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1


class BadRequest(ValueError):
    """A request the scorer will not score (too many candidates, wrong types)."""


def candidate_ids(user_id, item_ids, max_candidates: int) -> list[int]:
    """The candidate ids as ints; ``BadRequest`` for a non-int64 user or item id, no candidates or more than ``max_candidates``."""
    if isinstance(user_id, bool) or not isinstance(user_id, (int, np.integer)):
        raise BadRequest(f"user_id must be an integer, got {user_id!r}")
    if not INT64_MIN <= int(user_id) <= INT64_MAX:
        raise BadRequest(f"user_id {user_id} is outside int64")
    items = list(item_ids)
    if not items:
        raise BadRequest("item_ids is empty: send at least one candidate")
    if len(items) > max_candidates:
        raise BadRequest(f"{len(items)} candidates is more than the limit of {max_candidates}")
    if set(map(type, items)) <= {int}:  # the common case, checked without a Python loop per id
        try:
            np.asarray(items, np.int64)
            return items
        except OverflowError:
            pass
    for i, item in enumerate(items):  # name the first bad id
        if isinstance(item, bool) or not isinstance(item, (int, np.integer)):
            raise BadRequest(f"item_ids[{i}] must be an integer, got {item!r}")
        if not INT64_MIN <= int(item) <= INT64_MAX:
            raise BadRequest(f"item_ids[{i}] = {item} is outside int64")
    return [int(i) for i in items]


def status_flag(status: str, view: str, missing: str) -> str | None:
    """The flag a value's status earns: ``stale:<view>``, ``future:<view>`` (stamped after the
    request's time: not used, as a stale value is not), ``missing``, or None when present."""
    return {STALE: f"stale:{view}", FUTURE: f"future:{view}", MISSING: missing}.get(status)


def user_flags(status: str, user_stats: ViewRows | None) -> tuple[list[str], int]:
    """The user's flags (``status_flag`` of the sequence and of the stats) and how many are stale."""
    statuses = [(status, SEQUENCE_VIEW, "no_sequence")]
    if user_stats is not None:
        statuses.append((user_stats.status[0], USER_STATS_VIEW, f"no_{USER_STATS_VIEW}"))
    flags = [flag for flag in (status_flag(*s) for s in statuses) if flag]
    return flags, sum(s == STALE for s, _, _ in statuses)


def item_flags(codes: dict[str, np.ndarray], C: int, embedding_view: str) -> tuple[list[list[str]], np.ndarray, int]:
    """Each candidate's flags, whether any item view knows it, and the count of stale values;
    only the candidates with a stale, future or missing value are visited."""
    flags: list[list[str]] = [[] for _ in range(C)]
    known_any, stale = np.zeros(C, bool), 0
    for view, code in codes.items():
        known_any |= code != MISSING_CODE
        stale += int(np.count_nonzero(code == STALE_CODE))
        missing = "no_embedding" if view == embedding_view else f"no_{view}"
        for c in np.flatnonzero(code != PRESENT_CODE).tolist():  # in candidate order, each view's flag
            flags[c].append(status_flag(STATUS_NAMES[code[c]], view, missing))
    return flags, known_any, stale


def vector_fields(vectors: tuple[str, ...], embedding_view: str, reader: OnlineReader, C: int, H: int,
                  rows: dict[str, ItemRows], codes: dict[str, np.ndarray], now: dt.datetime, L: int,
                  side: dict | None = None) -> dict:
    """Vectors for targets (C, D) and history (1, L, D): fresh values only, zeros elsewhere. The
    history's come from ``side`` when the user side is cached, else from rows C..C+H of the
    embedding view."""
    if not vectors:
        return {}
    emb = rows[embedding_view]
    fresh = codes[embedding_view] == PRESENT_CODE  # (C,)
    if side is None:
        hist_fresh = reader.status_codes(embedding_view, emb.stamps_us[C:C + H], now) == PRESENT_CODE  # (H,)
    out = {}
    for vector in vectors:
        found = emb.found[vector][:C] & fresh  # (C,)
        target = np.where(found[:, None], emb.values[vector][:C], np.float32(0))  # (C, D)
        if side is not None:
            h, hf = side[f"hist_{vector}"].numpy(), side[f"hist_{vector}_found"].numpy()  # (1, L, D), (1, L)
        else:
            h = np.zeros((1, L, target.shape[1]), np.float32)  # (1, L, D)
            hf = np.zeros((1, L), bool)
            hf[0, :H] = emb.found[vector][C:C + H] & hist_fresh
            h[0, :H] = np.where(hf[0, :H, None], emb.values[vector][C:C + H], np.float32(0))
        out.update(batch_vector_fields(vector, target, found, h, hf))
    return out


def item_stats_fields(C: int, rows: dict[str, ItemRows], codes: dict[str, np.ndarray], item_views) -> dict:
    """The candidates' item stats block (all unknown for a service without item_stats)."""
    if "item_stats" not in item_views:
        return stats_fields(ITEM_STATS_COLUMNS, np.zeros(C), np.zeros(C), np.zeros(C), np.zeros(C, bool))
    stats = rows["item_stats"]
    known = codes["item_stats"] == PRESENT_CODE  # (C,)
    values = [np.where(known, stats.values[f][:C], 0.0) for f in ITEM_STATS_COLUMNS]
    return stats_fields(ITEM_STATS_COLUMNS, *values, known)


def user_keys(tensors: dict) -> list[str]:
    """The tensors of the user's side (the history), as opposed to the candidates'."""
    return [k for k in tensors if k.startswith("hist_") and k not in ("hist_sim", "hist_sim_mask")]
