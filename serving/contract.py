"""The train/serve contract: a checkpoint is served only by a store that serves its feature service
with the same features, and embeddings from the same encoder."""
from __future__ import annotations

from mmfs.core.contracts.names import embedding_view as embedding_view_of


class StoreMismatch(RuntimeError):
    """The online store does not serve what the checkpoint was trained on."""


def store_features(store, service_name: str) -> list[str]:
    """The ``view:feature`` names a feature service serves."""
    service = store.get_feature_service(service_name)
    return [f"{p.name}:{f.name}" for p in service.feature_view_projections for f in p.features]


def check_store(store, meta: dict) -> None:
    """Raise ``StoreMismatch`` unless ``store`` serves the checkpoint's feature service as trained."""
    name = meta["feature_service"]
    available = sorted(s.name for s in store.list_feature_services())
    if name not in available:
        raise StoreMismatch(f"the checkpoint was trained on feature service {name!r}, which this store does not have "
                            f"(it has {available}); apply the feature repo that declares it, or serve a checkpoint trained on one of these")
    if meta.get("features") is not None:
        served, trained = set(store_features(store, name)), set(meta["features"])
        if served != trained:
            raise StoreMismatch(f"feature service {name!r} differs from the one the checkpoint was trained on: "
                                f"missing online {sorted(trained - served)}, not in training {sorted(served - trained)}; "
                                "a changed service needs a new version name and a retrained model")
    embedding_view = embedding_view_of(p.name for p in store.get_feature_service(name).feature_view_projections)
    if embedding_view:
        trained_id = (meta.get("encoder_identity") or {}).get("encoder_id") or ""
        served_id = store.get_feature_view(embedding_view).tags.get("encoder_id", "")
        if not served_id:  # two empty identities would agree without anything being checked
            raise StoreMismatch(f"the store's {embedding_view} records no encoder identity (its table's _mmfs_meta.json names "
                                "none when mmfs apply ran): rerun mmfs encode-items, then mmfs apply")
        if trained_id != served_id:
            raise StoreMismatch(f"encoder identity differs: the checkpoint's embeddings came from encoder {trained_id or '(none)'!r}, "
                                f"the store's {embedding_view} from {served_id or '(none)'!r}; similarities and vectors would not "
                                "mean what the model learned. Serve a model trained on this encoder's tables")
