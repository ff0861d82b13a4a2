"""The online scorer: one user's C candidates, features from the Feast online store.

    scorer = Scorer.from_checkpoint("out/movielens/models/dmf/checkpoint.pt", store)
    result = scorer.score(user_id=414, item_ids=[1, 50, 318])

The checkpoint names the feature service it was trained on (the train/serve contract). The
scorer refuses a store that lacks that service, declares it with other features, or holds
embeddings from another encoder. Per request it reads:

- the user's sequence snapshot (one online read, never cached: it changes with every click);
- the candidates' and history items' features (embeddings, item stats), through a bounded LRU
  cache. Item features change only when they are materialised, so the cache is cleared when the
  Feast registry changes (materialisation records its interval there) and entries also expire
  after ``item_cache_max_age_s`` (for registries that are not a local file). TTL is judged on each
  request from the value's own timestamp, cached or not.

It computes s_j with the one shared function (``mmfs.core.features.similarity``), builds the same tensors
the training loader builds, and runs DMF's decoupled path: ``encode_user`` once, then
``score_candidates`` for all C candidates in one batch. Other models run ``forward`` on the
user's history broadcast to C rows.

What the training join does, the scorer does: a value older than its view's TTL is not used
(the join gives null) and is flagged ``stale``; a missing sequence is an empty history (cold
start). An item is an error entry only when neither the store nor the model knows it; an item
the model never saw in training is scored with the unseen-id embedding and flagged ``new_item``,
one without an embedding is flagged ``no_embedding`` (its vector is zeros and its similarities
unknown, as in training).
"""
from __future__ import annotations

import datetime as dt
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from mmfs.model.batch import ITEM_STATS_COLUMNS, USER_STATS_COLUMNS, similarity_fields, stats_fields, to_tensors, with_vocab_indices
from mmfs.model.checkpoint import load_checkpoint
from mmfs.model.models import model_vectors
from mmfs.core.contracts.names import ITEM_EMBEDDINGS_VIEW as EMBEDDING_VIEW, embedding_view as embedding_view_of
from mmfs.core.features.similarity import target_similarity
from mmfs.serving.inputs import SEQUENCE_VIEW, USER_STATS_VIEW, BadRequest, candidate_ids, item_flags, item_stats_fields, user_flags, user_keys, vector_fields  # noqa: F401 - BadRequest: what score() raises
from mmfs.serving.contract import StoreMismatch, check_store, store_features  # noqa: F401 - StoreMismatch: what Scorer() raises
from mmfs.core.contracts.names import CHANGED_ITEMS_FILE
from mmfs.online.columns import ItemRows
from mmfs.serving.caches import ChangedItems, UserSideCache
from mmfs.serving.item_features import ItemFeatureCache, ItemFeatures
from mmfs.serving.request_log import Served
from mmfs.serving.results import Prepared, ScoreResult
from mmfs.core.features.snapshot import STAMP_AFTER_US
from mmfs.online.reader import FUTURE, PRESENT, OnlineReader, ViewRows, stamp_us

EARLIEST = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)  # the tables' validated range starts here
UNKNOWN_ITEM = "unknown item: not in the online store and never seen in training"


@dataclass(frozen=True)
class ScorerConfig:
    """A ``Scorer``'s limits: candidates per request, the item cache, and how far in the future ``at`` may be."""

    max_candidates: int = 2000
    item_cache_size: int = 500_000  # (view, item) entries; 0 disables the cache
    item_cache_max_age_s: float = 300.0
    user_cache_size: int = 10_000  # users whose history vectors and DMF user state are kept (UserSideCache); 0: off
    future_slack: dt.timedelta | None = dt.timedelta(days=1)  # an `at` later than now + this is refused; None: no bound (replays)


class Scorer:
    """Scores one user's candidates with a trained model and the online store's features."""

    def __init__(self, model: torch.nn.Module, meta: dict, store, config: ScorerConfig = ScorerConfig()):
        check_store(store, meta)
        self.model = model.eval()
        self.meta = meta
        self.config = config
        self.feature_service = meta["feature_service"]
        self.model_name = meta["config"]["model"]["name"]
        similarity = meta["config"]["model"].get("similarity", "fused")
        if similarity != "fused":  # the online path computes s_j over all of mm_emb (mmfs.online.similarity)
            raise ValueError(f"a {self.model_name} checkpoint trained with model.similarity={similarity!r} is an ablation: "
                             "only similarity='fused' is served")
        self.reader = OnlineReader(store, self.feature_service)
        if SEQUENCE_VIEW not in self.reader.views:
            raise StoreMismatch(f"feature service {self.feature_service!r} has no online {SEQUENCE_VIEW} view to score with")
        self.vocab = meta["vocab"]
        self.max_len = int(meta["config"]["max_len"])
        features = meta.get("features") or store_features(store, self.feature_service)
        self.vectors = model_vectors(meta["config"]["model"]["name"], {"features": features})
        spec = meta["data_spec"]
        self.dims = {"mm_emb": spec.mm_dim, **dict(spec.modal_dims)}
        self.vectors = tuple(v for v in self.vectors if self.dims.get(v))
        # item_embeddings, or a backfilled encoder's item_embeddings_v2 for a ctr_dmf_v2 checkpoint
        self.embedding_view = embedding_view_of(self.reader.views) or EMBEDDING_VIEW
        wanted = {self.embedding_view: {v: self.dims[v] for v in self.vectors}, "item_stats": dict.fromkeys(ITEM_STATS_COLUMNS, 0)}
        self.cache = ItemFeatureCache(store, config.item_cache_size, config.item_cache_max_age_s)
        self.items = ItemFeatures(self.reader, self.cache, wanted)
        self.item_views = self.items.views
        self._online_from: tuple[int, dt.datetime | None] | None = None  # (cache invalidations, first materialised time)
        self.decoupled = hasattr(model, "encode_user") and hasattr(model, "score_candidates")
        # The user side is reusable only while the history's vectors cannot age out (no TTL on the embedding view).
        cacheable = not self.vectors or self.reader.ttl(self.embedding_view) is None
        self.user_cache = UserSideCache(config.user_cache_size if cacheable else 0)
        self.changes: ChangedItems | None = None  # follow_changes: mmfs stream's changed items
        self.served_hook = None  # the request log's submit(Served), when logging

    @classmethod
    def from_checkpoint(cls, path: str | Path, store, config: ScorerConfig = ScorerConfig()) -> "Scorer":
        """A scorer for the checkpoint at ``path`` over ``store``."""
        model, meta = load_checkpoint(path)
        return cls(model, meta, store, config)

    def invalidate_item(self, item_id: int) -> None:
        """Drop ``item_id``'s cached item features."""
        self.items.invalidate(item_id)

    def follow_changes(self, root: Path) -> None:
        """Follow ``mmfs stream``'s list of changed items under ``root`` (``CHANGED_ITEMS_FILE``):
        each request first drops the items a micro-batch applied since the last one from the cache."""
        self.changes = ChangedItems(root / CHANGED_ITEMS_FILE)

    def _drop_changed(self) -> None:
        if self.changes is not None:
            for item in self.changes.new_items():
                self.items.invalidate(item)

    # -- scoring -----------------------------------------------------------------------------------

    def online_from(self) -> dt.datetime | None:
        """The start of the sequence view's first materialised interval: the online store holds
        nothing older, so a request for an earlier time cannot be answered point-in-time. Re-read
        from the registry whenever it changes."""
        if self._online_from is None or self._online_from[0] != self.cache.invalidations:
            store = self.reader.store
            try:
                fv = store.registry.get_feature_view(SEQUENCE_VIEW, store.project, allow_cache=False)
            except Exception:  # noqa: BLE001 - a registry that cannot be re-read: fall back to the loaded view
                fv = self.reader.views[SEQUENCE_VIEW][0]
            starts = [start if start.tzinfo else start.replace(tzinfo=dt.timezone.utc) for start, _ in fv.materialization_intervals]
            self._online_from = (self.cache.invalidations, min(starts) if starts else None)
        return self._online_from[1]

    def check_time(self, now: dt.datetime) -> None:
        """``BadRequest`` unless ``now`` is aware, not before 1970, not beyond ``future_slack`` ahead, and not
        before the online store's first materialised interval."""
        if now.tzinfo is None:
            raise BadRequest("at must be timezone-aware (UTC)")
        if now < EARLIEST:
            raise BadRequest(f"at {now.isoformat()} is before {EARLIEST.isoformat()}: the tables hold nothing earlier")
        slack = self.config.future_slack
        if slack is not None and now > dt.datetime.now(dt.timezone.utc) + slack:
            raise BadRequest(f"at {now.isoformat()} is more than {slack} in the future")
        first = self.online_from()
        if first is not None and now < first:
            raise BadRequest(f"at {now.isoformat()} is before the online store's first materialised interval "
                             f"(from {first.isoformat()}): it holds no values for that time")

    @torch.inference_mode()
    def score(self, user_id: int, item_ids: Sequence[int], now: dt.datetime | None = None) -> ScoreResult:
        """Score ``item_ids`` for ``user_id`` as of ``now`` (default the clock) from the online store; unknown
        items get an error entry instead of a score. With a ``served_hook`` (the request log), the
        values used are handed to it and the result carries the record's ``request_id``."""
        began = time.perf_counter()
        items = candidate_ids(user_id, item_ids, self.config.max_candidates)
        now = now or dt.datetime.now(dt.timezone.utc)
        self.cache.check()
        self._drop_changed()
        self.check_time(now)
        # The user's sequence: one online read. Stale, future or missing = empty history, as in training.
        seq = self.reader.read(SEQUENCE_VIEW, [int(user_id)], now)
        status, hist_raw = seq.status[0], seq.values["hist_item_ids"][0]
        # The newest history time too: Feast's SQLite store keeps the row's stamp in whole seconds, and the
        # stream can write two snapshots of one user within a second. It is the snapshot's own stamp, to
        # the microsecond (stamped after its newest event): a snapshot that holds an event at or after
        # `now` is a future value, even where the stored stamp, cut to the second, is not after `now`.
        newest = (seq.values["hist_ts_us"][0] or [None])[-1] if "hist_ts_us" in seq.values else None
        if status == PRESENT and newest is not None and newest + STAMP_AFTER_US > stamp_us(now):
            status = FUTURE
        t_user = time.perf_counter()
        hist = [int(x) for x in (hist_raw or [])][-self.max_len:] if status == PRESENT else []
        user_stats = self.reader.read(USER_STATS_VIEW, [int(user_id)], now) if USER_STATS_VIEW in self.reader.views else None
        key = (int(user_id), seq.event_timestamps[0], newest, len(hist), status, self.cache.invalidations)
        side = self.user_cache.get(key)  # the history's vectors and DMF's user state, when this user was just scored
        # Item features, one read per view: the candidates, then (embedding view, user side not cached) the history.
        rows = {view: self.items.read(view, items + hist if view == self.embedding_view and side is None else items)
                for view in self.item_views}
        t_items = time.perf_counter()
        prepared = self.prepare(items, status, hist, rows, now, user_stats, side)
        t_assemble = time.perf_counter()
        logits, state = self.forward(prepared.tensors, len(items), side["state"] if side is not None else None)
        logits = logits.float().numpy().astype(np.float64)  # (C,)
        t_model = time.perf_counter()
        if side is None:
            self.user_cache.put(key, {**{k: prepared.tensors[k] for k in user_keys(prepared.tensors)}, "state": state})
        probabilities = 1.0 / (1.0 + np.exp(-logits))  # (C,)
        unknown = np.flatnonzero(prepared.unknown).tolist()  # no score for an item neither the store nor the model knows
        errors = dict.fromkeys(unknown, UNKNOWN_ITEM)
        if unknown:
            probabilities[unknown] = np.nan
            logits[unknown] = np.nan
        request_id = self._log(now, int(user_id), items, probabilities, prepared, seq, status, hist, user_stats, rows) if self.served_hook else ""
        ms = lambda a, b: round((b - a) * 1e3, 4)  # noqa: E731
        timings = {"read_user": ms(began, t_user), "read_items": ms(t_user, t_items), "similarity": round(prepared.similarity_ms, 4),
                   "assemble": round(ms(t_items, t_assemble) - prepared.similarity_ms, 4), "model": ms(t_assemble, t_model),
                   "total": ms(began, t_model)}
        return ScoreResult(int(user_id), self.feature_service, items, probabilities, logits, prepared.flags, errors, prepared.user_flags,
                           len(hist), prepared.stale, timings, request_id)

    def _log(self, now, user_id, items, probabilities, prepared: Prepared, seq, status, hist, user_stats, rows) -> str:
        """Hand what this request used to ``served_hook`` (references to the arrays, no copies); its request id."""
        request_id = uuid.uuid4().hex
        probabilities = np.where(prepared.unknown, np.nan, probabilities)  # (C,): no score for an unknown item
        C = len(items)
        item_stats = None
        if "item_stats" in self.item_views:
            item_stats = {"status": prepared.codes["item_stats"], **{f: rows["item_stats"].values[f][:C] for f in ITEM_STATS_COLUMNS}}
        users = None
        if user_stats is not None:
            users = {"status": user_stats.status[0], **{f: user_stats.values[f][0] for f in USER_STATS_COLUMNS}}
        t = prepared.tensors
        self.served_hook(Served(request_id, now, user_id, self.model_name, self.feature_service, items, probabilities, status,
                                seq.event_timestamps[0], hist, users, item_stats, prepared.codes.get(self.embedding_view),
                                t["hist_sim"].numpy() if "hist_sim" in t else None, t["hist_sim_mask"].numpy() if "hist_sim_mask" in t else None))
        return request_id

    def prepare(self, items: list[int], status: str, hist: list[int], rows: dict[str, ItemRows], now: dt.datetime,
                user_stats: ViewRows | None = None, side: dict | None = None) -> "Prepared":
        """The model's tensors for one user's C candidates, from online rows: ``rows[view]`` holds
        the view's rows for the C candidates, followed in the embedding view by the user's
        (truncated) ``hist`` unless ``side`` (a cached user side) gives the history's vectors.
        ``status`` is the sequence's status, ``user_stats`` the user's online stats row, if the
        service has them. The same tensors, built by the same ``mmfs.model.batch`` functions, as the
        training loader's."""
        user_flags_, stale = user_flags(status, user_stats)
        C, L = len(items), max(len(hist), 1)
        hist_ids = np.zeros((1, L), np.int64)
        hist_mask = np.zeros((1, L), bool)
        hist_ids[0, :len(hist)] = hist
        hist_mask[0, :len(hist)] = True
        codes = {view: self.reader.status_codes(view, rows[view].stamps_us[:C], now) for view in self.item_views}  # (C,) each
        flags, known_any, item_stale = item_flags(codes, C, self.embedding_view)
        batch: dict[str, np.ndarray] = {"item_id": np.asarray(items, np.int64), "hist_item_ids": hist_ids, "hist_mask": hist_mask}
        batch.update(vector_fields(self.vectors, self.embedding_view, self.reader, C, len(hist), rows, codes, now, L, side))
        similarity_ms = 0.0
        if "mm_emb" in batch:
            t_sim0 = time.perf_counter()
            sims = target_similarity(batch["mm_emb"], batch["hist_mm_emb"], batch["hist_mm_emb_found"])  # (C, L)
            batch.update(similarity_fields(sims, batch["mm_emb_found"][:, None] & batch["hist_mm_emb_found"]))  # (C, L)
            similarity_ms = (time.perf_counter() - t_sim0) * 1e3
        batch.update(item_stats_fields(C, rows, codes, self.item_views))
        user_known = user_stats is not None and user_stats.status[0] == PRESENT
        user_values = [float(user_stats.values[f][0]) if user_known else 0.0 for f in USER_STATS_COLUMNS]
        user = stats_fields(USER_STATS_COLUMNS, *(np.full(1, v) for v in user_values), np.array([user_known]))
        batch.update({k: np.repeat(v, C, axis=0) for k, v in user.items()})  # one user, C rows
        tensors = with_vocab_indices(to_tensors(batch), self.vocab)
        in_vocab = tensors["item_idx"].numpy() > 1
        for c in np.flatnonzero(~in_vocab).tolist():
            flags[c] = flags[c] + ["new_item"]
        return Prepared(tensors, flags, ~known_any & ~in_vocab, user_flags_, stale + item_stale, similarity_ms, codes)

    def forward(self, tensors: dict[str, torch.Tensor], C: int, state=None) -> tuple[torch.Tensor, object]:
        """(logits (C,), the user state). DMF: encode_user once (U = 1), or ``state`` when cached,
        then score_candidates for all C at once."""
        history = user_keys(tensors)
        if self.decoupled:
            if state is None:
                state = self.model.encode_user({k: tensors[k] for k in history})
            return self.model.score_candidates(state, tensors), state
        batch = dict(tensors)
        for k in history:  # one user's history, broadcast to the C rows (views, no copies)
            batch[k] = tensors[k].expand(C, *tensors[k].shape[1:])
        return self.model(batch), None
