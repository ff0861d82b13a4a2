"""The train/serve contract's encoder check, on a stand-in store: two missing identities never agree."""
from types import SimpleNamespace

import pytest

from mmfs.serving.contract import StoreMismatch, check_store


def store_with(encoder_id: str):
    view = SimpleNamespace(name="item_embeddings", features=[SimpleNamespace(name="mm_emb")])
    service = SimpleNamespace(name="ctr_dmf_v1", feature_view_projections=[view])
    return SimpleNamespace(list_feature_services=lambda: [service], get_feature_service=lambda name: service,
                           get_feature_view=lambda name: SimpleNamespace(tags={"encoder_id": encoder_id} if encoder_id else {}))


def test_the_encoder_identity_must_be_recorded_and_equal():
    meta = {"feature_service": "ctr_dmf_v1", "features": ["item_embeddings:mm_emb"], "encoder_identity": {"encoder_id": "e1"}}
    check_store(store_with("e1"), meta)
    with pytest.raises(StoreMismatch, match="encoder identity differs"):
        check_store(store_with("e2"), meta)
    with pytest.raises(StoreMismatch, match="records no encoder identity"):
        check_store(store_with(""), {**meta, "encoder_identity": {}})
