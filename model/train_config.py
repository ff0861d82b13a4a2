"""``mmfs train``'s configuration: a frozen dataclass, a YAML file and then ``--key=value``
overrides (dotted keys reach the model's own config, ``--model.name`` picks its family), each
checked against the field's type; a key the config (or the model family) lacks is an error."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from mmfs.model.config import ModelConfig
from mmfs.model.dmf import DMFConfig
from mmfs.model.models import MODELS, switch_family


LR_SCHEDULES = ("plateau", "cosine", "constant")


@dataclass(frozen=True)
class TrainConfig:
    """Everything ``mmfs train`` reads: the training set, output folder, model config, optimiser,
    stopping, evaluation and regularisation settings."""

    training_set: str = "out/movielens/training_sets/ctr_dmf_v1"
    out: str = ""  # empty: out/models/<model name> (``output_dir``), never another model's checkpoint
    model: ModelConfig = field(default_factory=DMFConfig)
    batch_size: int = 1024
    lr: float = 1e-3
    weight_decay: float = 1e-4
    # The recipe (the same for every model): validate ``evals_per_epoch`` times an epoch and keep the
    # best pass's weights; every setting below is counted in epochs, so a flat epoch does not end a run.
    # Cosine was chosen over plateau on validation AUC (docs/models.md: 3 seeds of DMF on the implicit
    # MovieLens set gave 0.7690 +- 0.0004 against plateau's 0.7681 +- 0.0040 over 5).
    max_epochs: int = 8
    patience_epochs: float = 3.0  # stop after this many epochs without a better validation AUC
    lr_schedule: str = "cosine"  # cosine: decay to min_lr by max_epochs | plateau: cut the rate when validation stalls | constant
    lr_patience_epochs: float = 1.0  # plateau: epochs without improvement before each cut
    lr_decay: float = 0.3  # plateau: the factor of each cut
    min_lr: float = 1e-5
    max_len: int = 50
    seed: int = 0
    device: str = "auto"
    max_steps_per_epoch: int = 0  # 0: the whole split
    max_eval_batches: int = 0  # 0: the whole validation/test split; else its first N batches (scale runs)
    evals_per_epoch: int = 4  # validation passes per epoch (the best pass may fall mid-epoch)
    vocab_min_count: int = 1  # item ids seen fewer times as train targets share the OOV row
    hist_dropout: float = 0.0  # train only: each history position is masked out with this probability
    oov_dropout: float = 0.0  # train only: each target / history id is replaced by OOV with this probability
    embedding_weight_decay: float = -1.0  # AdamW decay of the id embeddings; negative: weight_decay
    progress: bool = True

    def __post_init__(self):
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.patience_epochs <= 0 or self.lr_patience_epochs <= 0 or not 0 < self.lr_decay < 1:
            raise ValueError("patience_epochs and lr_patience_epochs must be > 0 and lr_decay in (0, 1)")

    @property
    def output_dir(self) -> Path:
        """Where the checkpoint, metrics and curve go: ``out``, else out/models/<model name>."""
        return Path(self.out or f"out/models/{self.model.name}")


# -- config resolution ----------------------------------------------------------------------------

def _coerce(value):
    return tuple(value) if isinstance(value, list) else value  # YAML lists -> the configs' tuples


def _typed(key: str, current, value):
    """``value`` as the type of the field's current value: an int where a float goes is fine, a
    string where a number goes is an error naming the key."""
    expected = type(current)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, expected) and not (expected is int and isinstance(value, bool)):
        return value
    raise ValueError(f"--{key} must be {expected.__name__}, got {value!r}")


def with_overrides(config, updates: dict):
    """A copy of a (nested) frozen dataclass with ``updates`` applied; unknown keys are errors. A model
    config's ``name`` is applied first: it picks the family whose settings the other keys must be."""
    if isinstance(config, ModelConfig) and "name" in updates:
        name = updates["name"]
        if not isinstance(name, str) or name not in MODELS:
            raise ValueError(f"--model.name must be one of {sorted(MODELS)}, got {name!r}")
        config = switch_family(config, name)
        updates = {k: v for k, v in updates.items() if k != "name"}
    names = {f.name: f for f in dataclasses.fields(config)}
    changes = {}
    for key, value in updates.items():
        head, _, rest = key.partition(".")
        if head not in names:
            what = f"model {config.name!r} ({type(config).__name__})" if isinstance(config, ModelConfig) else type(config).__name__
            raise ValueError(f"unknown config key {key!r} for {what}; known: {sorted(names)}")
        current = getattr(config, head)
        if dataclasses.is_dataclass(current):
            changes[head] = with_overrides(current, value if isinstance(value, dict) and not rest else {rest: value})
        elif rest:
            raise ValueError(f"{head} has no sub-keys (got {key!r})")
        else:
            changes[head] = _typed(key, current, _coerce(value))
    return dataclasses.replace(config, **changes)


def resolve_config(yaml_path: str | None, overrides: list[str], base: TrainConfig | None = None) -> TrainConfig:
    """``base`` (default ``TrainConfig()``) with the YAML file's keys, then each ``--key=value`` override
    (values parsed as YAML), applied."""
    config = base or TrainConfig()
    if yaml_path:
        config = with_overrides(config, yaml.safe_load(Path(yaml_path).read_text()) or {})
    for item in overrides:
        key, sep, raw = item.lstrip("-").partition("=")
        if not sep:
            raise ValueError(f"override {item!r} must be --key=value")
        config = with_overrides(config, {key.replace("-", "_"): yaml.safe_load(raw)})
    return config


def options_help() -> str:
    """Every ``--key=value`` option with its default, from the config dataclasses themselves."""
    lines = ["training options (--key=value; a YAML file given with --config sets the same keys):"]
    for f in dataclasses.fields(TrainConfig):
        if f.name != "model":
            lines.append(f"  --{f.name}={getattr(TrainConfig(), f.name)!r}")
    lines.append("model options (--model.key=value), shared by every model:")
    for f in dataclasses.fields(ModelConfig):
        lines.append(f"  --model.{f.name}={getattr(DMFConfig(), f.name)!r}")
    shared = {f.name for f in dataclasses.fields(ModelConfig)}
    for name, cls in MODELS.items():
        lines.append(f"  {name} only:")
        lines += [f"    --model.{f.name}={getattr(cls.Config(), f.name)!r}" for f in dataclasses.fields(cls.Config) if f.name not in shared]
    return "\n".join(lines)
