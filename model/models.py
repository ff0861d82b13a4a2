"""The model registry: one file per model (``din``, ``mmctr``, ``dmf``, ``diff_msin``), each declaring
its own facts (``NAME``, the feature ``SERVICE`` it reads, the embedding ``vectors`` it reads from
it); the registry's tables are built from them, and models are built by name from a ``DataSpec``
and a ``ModelConfig`` (``mmfs.model.config``)."""
from __future__ import annotations

from torch import nn

from mmfs.model.config import DataSpec, ModelConfig
from mmfs.model.diff_msin import DiffMSIN
from mmfs.model.din import DIN
from mmfs.model.dmf import DMF
from mmfs.model.mmctr import MMCTRDIN

FAMILIES = (DIN, MMCTRDIN, DMF, DiffMSIN)
MODELS = {family.NAME: family for family in FAMILIES}
SERVICES = {family.NAME: family.SERVICE for family in FAMILIES}


def build_model(spec: DataSpec, config: ModelConfig) -> nn.Module:
    """The model ``config.name`` names, for data shaped as ``spec``."""
    if config.name not in MODELS:
        raise ValueError(f"unknown model {config.name!r}; one of {sorted(MODELS)}")
    return MODELS[config.name](spec, config)


def model_vectors(name: str, manifest: dict) -> tuple[str, ...]:
    """The embedding vectors model family ``name`` reads from the features its training set's
    ``manifest`` (or a checkpoint) lists."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; one of {sorted(MODELS)}")
    return MODELS[name].vectors(manifest["features"])
