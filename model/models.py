"""The model registry: one file per model (``din``, ``mmctr``, ``dmf``, ``diff_msin``), built by
name from a ``DataSpec`` and a ``ModelConfig`` (``mmfs.model.config``), each with its feature service."""
from __future__ import annotations

from torch import nn

from mmfs.model.config import DataSpec, ModelConfig
from mmfs.model.diff_msin import DiffMSIN
from mmfs.model.din import DIN
from mmfs.model.dmf import DMF
from mmfs.model.mmctr import MMCTRDIN

MODELS = {"din": DIN, "mmctr_din": MMCTRDIN, "dmf": DMF, "diffmsin": DiffMSIN}
SERVICES = {"din": "ctr_din_v1", "mmctr_din": "ctr_mmctr_din_v1", "dmf": "ctr_dmf_v1", "diffmsin": "ctr_diffmsin_v1"}


def build_model(spec: DataSpec, config: ModelConfig) -> nn.Module:
    """The model ``config.name`` names, for data shaped as ``spec``."""
    if config.name not in MODELS:
        raise ValueError(f"unknown model {config.name!r}; one of {sorted(MODELS)}")
    return MODELS[config.name](spec, config)
