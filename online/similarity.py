"""Request-time similarities from the online store: s_j = cos(m_t, m_j) for one user's history and
C candidates, by the one similarity function the Spark job uses (``mmfs.core.features.similarity``)."""
from __future__ import annotations

import datetime as dt
from typing import Sequence

import numpy as np

from mmfs.core.contracts.names import ITEM_EMBEDDINGS_VIEW, USER_SEQUENCE_VIEW, embedding_view as embedding_view_of
from mmfs.core.features.similarity import target_similarity
from mmfs.online.reader import OnlineReader


def embedding_view(reader) -> str:
    """The service's item embedding view: item_embeddings, or a backfill's item_embeddings_v2."""
    return embedding_view_of(reader.views) or ITEM_EMBEDDINGS_VIEW


def online_similarities(reader: OnlineReader, user_id: int, item_ids: Sequence[int], now: dt.datetime | None = None,
                        vector: str = "mm_emb") -> tuple[list[int], "np.ndarray", "np.ndarray"]:
    """Request-time s_j for one user and C candidates from the online store.

    Returns the user's history ids, (C, L) similarities and their (C, L) known-mask (false where
    the candidate or history item has no fresh embedding). Uses the shared similarity function.
    """
    seq = reader.read(USER_SEQUENCE_VIEW, [user_id], now)
    hist = seq.fresh("hist_item_ids")[0] or []
    emb = reader.read(embedding_view(reader), list(item_ids) + list(hist), now)
    vectors = emb.fresh(vector)
    dim = next((len(v) for v in vectors if v), 0)
    block = np.zeros((len(vectors), dim), dtype=np.float32)
    found = np.array([bool(v) for v in vectors])
    if dim:
        block[found] = np.array([v for v in vectors if v], dtype=np.float32)
    C = len(item_ids)
    target, history = block[:C], block[C:][None]  # (C, D), (1, L, D)
    hist_found = found[C:][None]  # (1, L)
    sims = target_similarity(target, history, hist_found) if dim else np.zeros((C, len(hist)), np.float32)
    known = found[:C, None] & hist_found  # (C, L)
    return list(hist), sims, known
