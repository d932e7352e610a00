"""Transfer of a trained run to another experiment (pipeline.train.transfer): direct (the source
ensemble unchanged) and head (frozen convolutions, re-fitted final layer), on tiny image sets of two
experiments (tests/train_fixtures.py), with real training, prediction and model cards."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from pipeline import paths
from pipeline.config import ConfigError, load_config
from pipeline.errors import InputError
from pipeline.images.store import ImageSet
from pipeline.predict.core import predict_run
from pipeline.runs import load_ensemble, read_model_card
from pipeline.train.calibration import apply_calibration
from pipeline.train.data import normalise
from pipeline.train.loop import train_run
from pipeline.train.transfer import TRANSFER_FILE, transfer_run
from tests.train_fixtures import build_image_set

TRAIN = {"model": "I5", "image_set": "I5/week", "horizon": 5, "split": "custom",
         "insample_years": [1995, 1996], "test_years": [1997, 1997], "ensemble": 2, "epochs": 1,
         "lr": 1e-3, "precision": "fp32", "seed": 7, "threads": 1, "max_train_images": 80,
         "calibration": "platt", "parallel_members": 1}


def write_config(path: Path, name: str, train: dict | None = None, **sections) -> Path:
    data = {"name": name, "train": {**TRAIN, **(train or {})}, **sections}
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def experiments(tmp_path_factory):
    """A trained source experiment and a target experiment with its own images (other stocks)."""
    root = tmp_path_factory.mktemp("transfer")
    src_yaml = write_config(root / "source.yaml", "source")
    src = load_config(src_yaml, [f"data_dir={root}"])
    build_image_set(src, n_stocks=4, seed=0)
    train_run(src)
    target = load_config(write_config(root / "target.yaml", "target"), [f"data_dir={root}"])
    build_image_set(target, n_stocks=4, seed=1)
    return root, src_yaml, src


def target_cfg(root: Path, src_yaml: Path, mode: str, *sets: str):
    return load_config(None, [f"data_dir={root}", "name=target"]
                       + [f"train.{k}={v}" for k, v in TRAIN.items()]
                       + [f"transfer.mode={mode}", f"transfer.source_config={src_yaml}", *sets])


def p_up_by_hand(ens, images: np.ndarray) -> np.ndarray:
    """Each loaded member's calibrated P(up) (N, k): plain eval-mode forward passes in fp32."""
    mean, std = ens.norm["mean"], ens.norm["std"]
    x = normalise(np.asarray(images), mean, std)
    out = []
    with torch.no_grad():
        for m, cal in zip(ens.members, ens.calibrations):
            p = torch.softmax(m(x).float(), dim=1)[:, 1].numpy().astype(np.float64)
            out.append(apply_calibration(p, cal))
    return np.column_stack(out)


def test_direct_transfer_predicts_the_source_models_on_target_images(experiments):
    root, src_yaml, src = experiments
    cfg = target_cfg(root, src_yaml, "direct")
    run = transfer_run(cfg)
    assert run.name == "I5_R5-is1995-1996-os1997-1997-direct_from_source"
    src_run = paths.run_dir(src)
    for i in range(2):  # the weights are the source's, byte for byte
        assert (run / f"member_{i}" / "best.pt").read_bytes() == \
            (src_run / f"member_{i}" / "best.pt").read_bytes()
    card = read_model_card(run)
    assert card["transfer"]["mode"] == "direct"
    assert card["transfer"]["source_run"] == str(src_run.resolve())
    assert (run / TRANSFER_FILE).exists()
    preds = pd.read_parquet(predict_run(cfg))
    target_images = ImageSet(paths.images_dir(cfg, "I5/week"))
    expected = p_up_by_hand(load_ensemble(src_run), target_images.images(1997))
    assert len(preds) == len(expected) == target_images.count(1997)
    np.testing.assert_allclose(preds[["p_up_m0", "p_up_m1"]].to_numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(preds["p_up"], expected.mean(axis=1), atol=1e-5)
    # Source images predicted by the same models differ: the target's rows are really the target's.
    src_probs = p_up_by_hand(load_ensemble(src_run), ImageSet(paths.images_dir(src, "I5/week")).images(1997))
    assert not np.allclose(src_probs[: len(expected)], expected)
    mtime = (run / "_TRAIN_DONE.json").stat().st_mtime_ns
    transfer_run(cfg)  # done with the same source: skipped
    assert (run / "_TRAIN_DONE.json").stat().st_mtime_ns == mtime


def test_head_refit_changes_only_the_head(experiments):
    root, src_yaml, src = experiments
    cfg = target_cfg(root, src_yaml, "head", "train.epochs=2", "train.patience=1")
    run = transfer_run(cfg)
    assert run.name.endswith("-head_from_source") and run != paths.run_dir(target_cfg(root, src_yaml, "direct"))
    source = load_ensemble(paths.run_dir(src))
    refit = load_ensemble(run)
    assert refit.norm == source.norm  # the frozen convolutions keep the scale they were trained on
    for a, b in zip(source.members, refit.members):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys()
        body = [k for k in sa if not k.startswith("head.")]
        assert any("running_mean" in k for k in body)  # batch-norm statistics are compared too
        for k in body:
            assert torch.equal(sa[k], sb[k]), k
        assert not torch.equal(sa["head.2.weight"], sb["head.2.weight"])
    log = pd.read_csv(run / "member_0" / "log.csv")
    assert len(log) >= 1 and np.isfinite(log.val_loss).all()
    card = read_model_card(run)
    assert card["transfer"]["mode"] == "head"
    assert all(m["calibration"]["method"] == "platt" for m in card["members"])
    preds = pd.read_parquet(predict_run(cfg))
    assert preds["p_up"].between(0, 1).all() and len(preds) == ImageSet(
        paths.images_dir(cfg, "I5/week")).count(1997)


def test_direct_refuses_another_ensemble_or_calibration(experiments):
    root, src_yaml, _ = experiments
    with pytest.raises(ConfigError, match=r"has 2 members but train\.ensemble is 1.*train\.ensemble: 2"):
        transfer_run(target_cfg(root, src_yaml, "direct", "train.ensemble=1"))
    with pytest.raises(ConfigError, match=r"calibration platt but train\.calibration is 'none'"):
        transfer_run(target_cfg(root, src_yaml, "direct", "train.calibration=none"))


def test_size_mismatch_refused_when_the_config_loads(experiments, tmp_path):
    root, src_yaml, src = experiments
    # An I20 experiment cannot take the I5 source: refused at load, naming both settings.
    i20 = ["train.model=I20", "train.image_set=I20/week"]
    with pytest.raises(ConfigError, match=r"transfer\.source_config .*source\.yaml was trained with "
                                          r"train\.model 'I5'.*this experiment \(target\) has "
                                          r"train\.model 'I20'"):
        target_cfg(root, src_yaml, "direct", *i20)
    # A run folder given directly is checked from its model card, also at load.
    run = paths.run_dir(src)
    with pytest.raises(ConfigError, match=r"transfer\.source_run .* was trained with train\.model 'I5'"):
        load_config(None, [f"data_dir={root}", "name=target", *[f"train.{k}={v}" for k, v in TRAIN.items()],
                           *i20, "transfer.mode=head", f"transfer.source_run={run}"])
    # The same model drawn without volume bars reads other images.
    with pytest.raises(ConfigError, match=r"images\.volume True .* images\.volume False"):
        target_cfg(root, src_yaml, "direct", "images.volume=false")


def test_transfer_settings_refused(experiments, tmp_path):
    root, src_yaml, _ = experiments
    with pytest.raises(ConfigError, match=r"'transfer\.source_config' is set but 'transfer\.mode' is none"):
        load_config(None, [f"transfer.source_config={src_yaml}"])
    with pytest.raises(ConfigError, match=r"'transfer\.mode' is direct: name the source"):
        load_config(None, ["transfer.mode=direct"])
    with pytest.raises(ConfigError, match=r"'transfer\.mode' is 'fine'"):
        load_config(None, ["transfer.mode=fine"])
    untrained = write_config(tmp_path / "untrained.yaml", "untrained")
    with pytest.raises(InputError, match=r"is not a finished training run.*make train CONFIG="):
        transfer_run(target_cfg(root, untrained, "direct"))
    with pytest.raises(ConfigError, match=r"trained for train\.horizon 5 but this experiment "
                                          r"\(target\) has train\.horizon 20"):
        transfer_run(target_cfg(root, src_yaml, "direct", "train.horizon=20"))


def test_train_stage_dispatches_to_transfer(experiments):
    from argparse import Namespace

    from pipeline.train.__main__ import _body

    root, src_yaml, _ = experiments
    cfg = target_cfg(root, src_yaml, "direct")
    _body(cfg, Namespace(model=None))
    assert (paths.run_dir(cfg) / "_TRAIN_DONE.json").exists()
    with pytest.raises(ConfigError, match=r"--model I20 with transfer\.mode direct"):
        _body(cfg, Namespace(model="I20"))


def test_shipped_crypto_configs():
    own, direct, head = (load_config(c) for c in ("demo_crypto", "demo_crypto_direct", "demo_crypto_head"))
    assert own.synthetic.calendar == direct.synthetic.calendar == head.synthetic.calendar == "daily"
    assert (direct.transfer.mode, head.transfer.mode) == ("direct", "head")
    names = {paths.run_name(c) for c in (own, direct, head)}
    assert names == {"I20_R20-is1993-1998-os1999-2003", "I20_R20-is1993-1998-os1999-2003-direct_from_demo",
                     "I20_R20-is1993-1998-os1999-2003-head_from_demo"}
    # Everything but the name and the transfer section is demo_crypto's.
    for c in (direct, head):
        assert (c.synthetic, c.images, c.train) == (own.synthetic, own.images, own.train)
