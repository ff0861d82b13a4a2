"""The model registry: one file per model (``din``, ``mmctr``, ``dmf``, ``diff_msin``), each declaring
its own facts (``NAME``, its settings ``Config``, the feature ``SERVICE`` it reads, the embedding
``vectors`` it reads from it); the registry's tables are built from them, and models are built by
name from a ``DataSpec`` and their family's config (``model_config``)."""
from __future__ import annotations

import dataclasses

from torch import nn

from mmfs.model.config import DataSpec, ModelConfig
from mmfs.model.diff_msin import DiffMSIN
from mmfs.model.din import DIN
from mmfs.model.dmf import DMF
from mmfs.model.mmctr import MMCTRDIN

FAMILIES = (DIN, MMCTRDIN, DMF, DiffMSIN)
MODELS = {family.NAME: family for family in FAMILIES}
SERVICES = {family.NAME: family.SERVICE for family in FAMILIES}


def family(name: str) -> type:
    """The model class ``name`` names; an unknown name is an error listing the known ones."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; one of {sorted(MODELS)}")
    return MODELS[name]


def settings(name: str) -> list[str]:
    """The settings (config fields) of model family ``name``, shared ones included."""
    return [f.name for f in dataclasses.fields(family(name).Config)]


def model_config(name: str, **values) -> ModelConfig:
    """Family ``name``'s frozen config with ``values``; a key the family does not have is an error
    naming the family and its settings (DIN has no ``buckets``: it is never silently ignored)."""
    cls = family(name).Config
    unknown = sorted(set(values) - set(settings(name)) - {"name"})
    if unknown:
        raise ValueError(f"{', '.join(unknown)}: not a setting of model {name!r}; its settings: {settings(name)}")
    return cls(**{**values, "name": name})


def switch_family(config: ModelConfig, name: str) -> ModelConfig:
    """``config`` as model ``name``'s config: the settings changed from their defaults are carried
    over, and one the new family does not have is an error (it would be silently dropped)."""
    if name == config.name:
        return config
    default = type(config)()
    changed = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)
               if f.name != "name" and getattr(config, f.name) != getattr(default, f.name)}
    return model_config(name, **changed)


def build_model(spec: DataSpec, config: ModelConfig) -> nn.Module:
    """The model ``config.name`` names, for data shaped as ``spec``."""
    cls = family(config.name)
    if not isinstance(config, cls.Config):
        raise TypeError(f"model {config.name!r} needs a {cls.Config.__name__}, got a {type(config).__name__}")
    return cls(spec, config)


def model_vectors(name: str, manifest: dict) -> tuple[str, ...]:
    """The embedding vectors model family ``name`` reads from the features its training set's
    ``manifest`` (or a checkpoint) lists."""
    return family(name).vectors(manifest["features"])
