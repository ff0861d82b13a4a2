"""mmfs train on a tiny Feast training set: config overrides, metrics, checkpoint round trip."""
import json

import pandas as pd
import pytest
import torch

from mmfs.model.data import LoaderConfig, TrainingSetDataset
from mmfs.model.metrics import gauc
from mmfs.model.models import model_config
from mmfs.model.checkpoint import load_checkpoint
from mmfs.model.train import TrainConfig, prepare, resolve_config, train
from mmfs.store import feast_store, training_set
from mmfs.store.training_set import SplitPoints


def at(text):
    return pd.Timestamp(text, tz="UTC").to_pydatetime()


@pytest.fixture(scope="module")
def dmf_set(applied_repo, tmp_path_factory):
    repo, root = applied_repo
    out = tmp_path_factory.mktemp("sets") / "dmf"
    # train: Jan 1-2, valid: Jan 3 - Jul 1 (both classes), test: Jul 1 on
    training_set.build(feast_store.open_store("duckdb", repo, root), "ctr_dmf_v1", root / "events", out,
                       split=SplitPoints(at("2020-01-02"), at("2020-07-01")), saved_dataset=False)
    return out


def test_overrides_reach_nested_configs_and_reject_unknown_keys(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 0.01\nmodel:\n  name: dmf\n  mlp: [16, 8]\n")
    config = resolve_config(str(path), ["--model.buckets=20", "--max_epochs=3"])
    assert (config.lr, config.max_epochs, config.model.name, config.model.mlp, config.model.buckets) == (0.01, 3, "dmf", (16, 8), 20)
    with pytest.raises(ValueError, match="unknown config key 'bucket' for model 'dmf'"):
        resolve_config(None, ["--model.bucket=3"])
    with pytest.raises(ValueError, match="unknown config key 'patience' for TrainConfig"):  # now patience_epochs
        resolve_config(None, ["--patience=4"])


def test_each_model_has_its_own_settings_and_an_inapplicable_one_is_an_error(tmp_path):
    """DIN has no buckets: before per-model configs, --model.buckets=20 was silently ignored by DIN."""
    with pytest.raises(ValueError, match="unknown config key 'buckets' for model 'din'"):
        resolve_config(None, ["--model.name=din", "--model.buckets=20"])
    with pytest.raises(ValueError, match="buckets: not a setting of model 'din'"):  # set first, then the family changes
        resolve_config(None, ["--model.buckets=20", "--model.name=din"])
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  name: din\n  tiers: 3\n")
    with pytest.raises(ValueError, match="tiers"):
        resolve_config(str(path), [])
    config = resolve_config(None, ["--model.id_dim=8", "--model.name=din", "--model.pooling=sum"])  # shared settings carry over
    assert (type(config.model).__name__, config.model.id_dim, config.model.pooling) == ("DINConfig", 8, "sum")
    assert not hasattr(config.model, "buckets")
    with pytest.raises(ValueError, match="model.name must be one of"):
        resolve_config(None, ["--model.name=gbdt"])
    with pytest.raises(ValueError, match="model.similarity must be one of"):
        resolve_config(None, ["--model.similarity=audio"])
    with pytest.raises(ValueError, match="lr_schedule must be one of"):
        resolve_config(None, ["--lr_schedule=step"])


def test_gauc_weights_users_with_both_classes_only():
    import numpy as np

    users = np.array([1, 1, 1, 2, 2, 3])
    labels = np.array([1, 0, 0, 1, 0, 1])  # user 3 has one class: left out
    scores = np.array([0.9, 0.1, 0.95, 0.2, 0.8, 0.5])
    assert gauc(users, labels, scores) == pytest.approx((0.5 * 3 + 0.0 * 2) / 5)


@pytest.mark.parametrize("name", ["dmf", "din"])
def test_train_writes_a_checkpoint_that_reloads_to_the_same_logits(dmf_set, tmp_path, name):
    config = TrainConfig(training_set=str(dmf_set), out=str(tmp_path / name), batch_size=4, max_epochs=2, patience_epochs=5,
                         max_len=4, progress=False, model=model_config(name, id_dim=4, mlp=(8,), **({"buckets": 5, "tiers": 3} if name == "dmf" else {})))
    metrics = train(config)
    assert {"auc", "gauc", "logloss"} <= metrics["valid"].keys() and len(metrics["history"]) == 2
    assert (tmp_path / name / "curve.png").stat().st_size > 1000
    saved = json.loads((tmp_path / name / "metrics.json").read_text())
    assert saved["test"]["rows"] == 1 and saved["valid"]["rows"] == 4 and saved["valid"]["auc"] == saved["valid"]["auc"]  # not NaN
    model, meta = load_checkpoint(tmp_path / name / "checkpoint.pt")
    assert meta["feature_service"] == "ctr_dmf_v1" and meta["config"]["model"]["name"] == name
    vectors = () if name == "din" else ("mm_emb",)
    data = TrainingSetDataset(dmf_set, LoaderConfig(split="valid", batch_size=8, max_len=4, vectors=vectors, shuffle=False))
    batch = prepare(next(iter(data)), meta["vocab"], torch.device("cpu"))
    with torch.no_grad():
        logits = model(batch)
    # The checkpoint is the model that was selected and evaluated, not just a loadable one: its
    # logits give back the validation metrics the training run reported.
    from mmfs.model.metrics import all_metrics

    reloaded = all_metrics(batch["user_id"].numpy(), batch["label"].numpy(), logits.numpy())
    assert reloaded["rows"] == saved["valid"]["rows"]
    assert reloaded["auc"] == pytest.approx(saved["valid"]["auc"], abs=1e-9)
    assert reloaded["logloss"] == pytest.approx(saved["valid"]["logloss"], abs=1e-6)


@pytest.mark.integration
def test_torch_distributor_trains_data_parallel_in_two_processes(dmf_set, tmp_path, spark):
    import pyarrow.parquet as pq

    from mmfs.model.train import run_distributed

    for path in (dmf_set / "split=train").glob("*.parquet"):  # several row groups, so both ranks get data
        pq.write_table(pq.read_table(path), path, row_group_size=1)
    config = TrainConfig(training_set=str(dmf_set), out=str(tmp_path / "ddp"), batch_size=2, max_epochs=2, patience_epochs=5,
                         max_len=4, progress=False, model=model_config("dmf", id_dim=4, mlp=(8,), buckets=5, tiers=3))
    metrics = run_distributed(config, num_processes=2)
    assert metrics["world_size"] == 2 and len(metrics["history"]) == 2
    model, meta = load_checkpoint(tmp_path / "ddp" / "checkpoint.pt")
    assert meta["feature_service"] == "ctr_dmf_v1"


def test_cli_lists_every_option_and_refuses_bad_ones_in_one_line(capsys):
    import dataclasses

    from mmfs.model.train import TrainConfig, main

    with pytest.raises(SystemExit) as shown:
        main(["--help"])
    assert shown.value.code == 0
    usage = capsys.readouterr().out
    for f in dataclasses.fields(TrainConfig):
        assert f"--{f.name}" in usage, f.name
    from mmfs.model.models import MODELS

    for family in MODELS.values():
        for f in dataclasses.fields(family.Config):
            assert f"--model.{f.name}=" in usage, f.name
    for bad, message in ((["--lr=fast"], "--lr must be float, got 'fast'"), (["--bogus=1"], "unknown config key 'bogus'"),
                         (["--training-set", "/no/such/set"], "is not a training set")):
        with pytest.raises(SystemExit) as refused:
            main(["--model", "din"] + bad)
        err = capsys.readouterr().err
        assert refused.value.code == 2 and message in err and "Traceback" not in err and err.count("\n") == 1, err


def test_each_model_defaults_to_its_own_output_folder():
    """mmfs train --model din without --out must not overwrite the DMF checkpoint."""
    from pathlib import Path

    assert TrainConfig(model=model_config("din")).output_dir == Path("out/models/din")
    assert TrainConfig().output_dir == Path("out/models/dmf")
    assert TrainConfig(out="x/y", model=model_config("din")).output_dir == Path("x/y")


def test_the_recipe_counts_in_epochs_so_a_flat_epoch_does_not_end_a_run(monkeypatch):
    """4 validation passes an epoch; the best pass at 0.5, then flat: the rate is cut 1 epoch later
    (1.5) and again 1 epoch after that (2.5), and the run ends after patience_epochs = 2 (at 2.5), not
    after 4 passes (1.5), as when patience counted passes."""
    import numpy as np

    from mmfs.model import train as train_module

    scripted = iter([0.60, 0.61] + [0.61] * 8)
    monkeypatch.setattr(train_module, "evaluate", lambda *a, **k: {"auc": next(scripted), "gauc": 0.5, "logloss": 0.6, "ece": 0.0, "rows": 1})
    model = torch.nn.Linear(1, 1)
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3)
    config = TrainConfig(patience_epochs=2.0, lr_schedule="plateau", lr_patience_epochs=1.0, lr_decay=0.5, progress=False)
    selection = train_module.Selection(model, optimiser, None, None, None, config)
    stops = [selection.validate(k / 4, []) for k in range(1, 11)]  # 0.25 .. 2.5
    assert stops.index(True) == 9  # the pass at 2.5: 2 epochs after the best (0.5)
    rates = [h["lr"] for h in selection.history]  # each pass records the rate it trained under
    assert rates == [1e-3] * 6 + [5e-4] * 4 and optimiser.param_groups[0]["lr"] == 2.5e-4
    assert selection.best_at == 0.5

    cosine = [train_module.cosine_rate(TrainConfig(lr=1e-3, min_lr=1e-5, max_epochs=10), e) for e in (0, 5, 10, 12)]
    assert cosine[0] == pytest.approx(1e-3) and cosine[1] == pytest.approx((1e-3 + 1e-5) / 2) and cosine[2] == cosine[3] == pytest.approx(1e-5)
    assert np.isfinite(cosine).all()


def test_expected_calibration_error():
    import numpy as np

    from mmfs.model.metrics import ece

    labels = np.array([1, 1, 0, 0] * 25)
    assert ece(labels, np.full(100, 0.5)) == pytest.approx(0.0)  # right on average in its one bin
    assert ece(labels, np.where(labels == 1, 0.99, 0.01)) == pytest.approx(0.01)
    assert ece(labels, np.full(100, 0.9)) == pytest.approx(0.4)
    assert ece(np.array([1, 0]), np.array([1.0, 0.0])) == 0.0  # p = 1 falls in the last bin
    # bins weighted by their rows: 90 rows at 0.9 (81 clicks, calibrated), 10 at 0.1 (5 clicks, off by 0.4)
    labels = np.r_[np.ones(81), np.zeros(9), np.ones(5), np.zeros(5)]
    assert ece(labels, np.r_[np.full(90, 0.9), np.full(10, 0.1)]) == pytest.approx(0.04)
