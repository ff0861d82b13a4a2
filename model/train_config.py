"""``mmfs train``'s configuration: a frozen dataclass, a YAML file and then ``--key=value``
overrides (dotted keys reach the model config), each checked against the field's type."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from mmfs.model.config import ModelConfig


@dataclass(frozen=True)
class TrainConfig:
    """Everything ``mmfs train`` reads: the training set, output folder, model config, optimiser,
    stopping, evaluation and regularisation settings."""

    training_set: str = "out/movielens/training_sets/ctr_dmf_v1"
    out: str = ""  # empty: out/models/<model name> (``output_dir``), never another model's checkpoint
    model: ModelConfig = field(default_factory=ModelConfig)
    batch_size: int = 1024
    lr: float = 1e-3
    weight_decay: float = 1e-4
    max_epochs: int = 10
    patience: int = 4  # validation passes without improvement before stopping
    max_len: int = 50
    seed: int = 0
    device: str = "auto"
    max_steps_per_epoch: int = 0  # 0: the whole split
    max_eval_batches: int = 0  # 0: the whole validation/test split; else its first N batches (scale runs)
    evals_per_epoch: int = 4  # validation passes per epoch; patience counts passes (the best pass is often in epoch 1)
    vocab_min_count: int = 1  # item ids seen fewer times as train targets share the OOV row
    hist_dropout: float = 0.0  # train only: each history position is masked out with this probability
    oov_dropout: float = 0.0  # train only: each target / history id is replaced by OOV with this probability
    embedding_weight_decay: float = -1.0  # AdamW decay of the id embeddings; negative: weight_decay
    progress: bool = True

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
    """A copy of a (nested) frozen dataclass with ``updates`` applied; unknown keys are errors."""
    names = {f.name: f for f in dataclasses.fields(config)}
    changes = {}
    for key, value in updates.items():
        head, _, rest = key.partition(".")
        if head not in names:
            raise ValueError(f"unknown config key {key!r} for {type(config).__name__}; known: {sorted(names)}")
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
    lines.append("model options (--model.key=value):")
    for f in dataclasses.fields(ModelConfig):
        lines.append(f"  --model.{f.name}={getattr(ModelConfig(), f.name)!r}")
    return "\n".join(lines)
