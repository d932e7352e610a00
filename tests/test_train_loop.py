"""Training loop: early stopping, metrics, a real short training, resume, label-2 exclusion."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from train_fixtures import build_image_set, make_config  # noqa: E402

from pipeline.io import read_json  # noqa: E402
from pipeline.paths import run_dir  # noqa: E402
from pipeline.train import loop  # noqa: E402
from pipeline.train.data import MemmapImages, collate_batch, insample_index  # noqa: E402
from pipeline.train.ddp import DistInfo  # noqa: E402
from pipeline.runs import load_ensemble, read_model_card  # noqa: E402
from pipeline.train.loop import EarlyStopping, Runtime, binary_metrics, resolve_runtime, train_run  # noqa: E402


def test_early_stopping_scripted_sequence():
    s = EarlyStopping(patience=2)
    losses = [0.70, 0.69, 0.695, 0.69, 0.71, 0.60]  # 0.69 at epoch 3 ties, does not improve
    stops = []
    for e, v in enumerate(losses):
        s.update(e, v)
        stops.append(s.should_stop(e))
    assert stops == [False, False, False, True, True, False]
    assert s.best_epoch == 5 and s.best_loss == 0.60  # (a loop breaks at epoch 3)
    s = EarlyStopping(patience=2)
    for e, v in enumerate([0.7, 0.6, 0.5]):
        s.update(e, v)
        assert not s.should_stop(e)
    nan = EarlyStopping(patience=1)
    nan.update(0, 0.5)
    assert not nan.update(1, float("nan")) and nan.should_stop(1)
    assert EarlyStopping(**s.state()) == s


def test_binary_metrics_hand_computed():
    acc, mcc, diff = binary_metrics(tp=3, tn=4, fp=1, fn=2)
    assert acc == pytest.approx(0.7)
    assert mcc == pytest.approx((12 - 2) / np.sqrt(4 * 5 * 5 * 6))
    assert diff == pytest.approx((4 - 6) / 10)
    assert binary_metrics(5, 0, 5, 0)[1] == 0.0  # nobody predicted down: MCC defined as 0


def test_runtime_resolution():
    t = make_config(Path("/tmp")).train
    rt = resolve_runtime(t, torch.device("cpu"))
    assert rt.precision == "fp32" and rt.channels_last
    t.precision = "auto"
    assert resolve_runtime(t, torch.device("cpu")).precision == ("bf16" if loop.cpu_has_fast_bf16() else "fp32")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    cfg = make_config(root, ensemble=2, epochs=2)
    build_image_set(cfg, n_stocks=4)
    return cfg, train_run(cfg)


def test_train_run_learns_and_writes_artifacts(trained):
    cfg, run = trained
    assert run == run_dir(cfg) and run.name == "I5_R5-is1995-1996-os1997-1997"
    for f in ("config.yaml", "norm.json", "summary.json", "_TRAIN_DONE.json"):
        assert (run / f).exists(), f
    norm = read_model_card(run)["norm"]
    assert 0 < norm["mean"] < 0.2 and norm["std"] > 0
    s = read_json(run / "summary.json")
    assert len(s["members"]) == 2 and s["precision"] == "fp32" and s["device"] == "cpu"
    assert s["n_train"] + s["n_val"] == read_json(run / "pool.json")["n"]
    for i in range(2):
        m = run / f"member_{i}"
        log = pd.read_csv(m / "log.csv")
        assert list(log.columns)[:8] == ["epoch", "train_loss", "train_acc", "val_loss", "val_acc",
                                         "val_mcc", "seconds", "images_per_s"]
        assert log["epoch"].tolist() == [0, 1]
        ms = read_json(m / "summary.json")
        assert set(ms) >= {"best_epoch", "best_val_loss", "best_val_acc", "epochs_run", "stopped_early"}
        assert ms["best_val_loss"] == pytest.approx(log["val_loss"].min())
        assert ms["best_epoch"] == int(log["val_loss"].idxmin())
        # The visible pattern must be learnt: validation accuracy clearly above chance.
        assert ms["best_val_acc"] > 0.8
        ck = torch.load(m / "checkpoint.pt", weights_only=True)
        assert ck["epoch"] == 1 and len(ck["log"]) == 2
    # members differ (own seed -> own split and init)
    a, b = load_ensemble(run, [0]).members[0], load_ensemble(run, [1]).members[0]
    assert not torch.equal(a.head[2].weight, b.head[2].weight)
    assert not a.training


def test_train_run_skips_when_done(trained, caplog):
    cfg, run = trained
    before = (run / "member_0" / "best.pt").stat().st_mtime_ns
    caplog.set_level("INFO")
    assert train_run(cfg) == run
    assert "already trained" in caplog.text
    assert (run / "member_0" / "best.pt").stat().st_mtime_ns == before


def test_load_member_is_best_weights(trained):
    cfg, run = trained
    m = load_ensemble(run, [1]).members[0]
    sd = torch.load(run / "member_1" / "best.pt", weights_only=True)
    assert all(torch.equal(v, sd[k]) for k, v in m.state_dict().items())


def test_interrupted_run_resumes_to_identical_weights(tmp_path):
    ref_cfg = make_config(tmp_path / "a", ensemble=1, epochs=3, patience=5)
    build_image_set(ref_cfg, n_stocks=3)
    ref = train_run(ref_cfg)

    cfg = make_config(tmp_path / "b", ensemble=1, epochs=3, patience=5)
    build_image_set(cfg, n_stocks=3)

    def interrupt(member, epoch, row):
        if epoch == 1:
            raise KeyboardInterrupt("simulated interruption")

    with pytest.raises(KeyboardInterrupt):
        train_run(cfg, on_epoch_end=interrupt)
    run = run_dir(cfg)
    assert not (run / "member_0" / "best.pt").exists()
    assert torch.load(run / "member_0" / "checkpoint.pt", weights_only=True)["epoch"] == 1
    seen = []
    train_run(cfg, on_epoch_end=lambda m, e, r: seen.append(e))
    assert seen == [2]  # only the missing epoch ran
    a = torch.load(ref / "member_0" / "best.pt", weights_only=True)
    b = torch.load(run / "member_0" / "best.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    la, lb = pd.read_csv(ref / "member_0" / "log.csv"), pd.read_csv(run / "member_0" / "log.csv")
    pd.testing.assert_frame_equal(la.drop(columns=["seconds", "images_per_s"]),
                                  lb.drop(columns=["seconds", "images_per_s"]))


def _spy_on_loss(monkeypatch):
    seen = {"targets": [], "marked": 0, "images": 0}
    real = torch.nn.functional

    def cross_entropy(logits, y, *a, **k):
        seen["targets"].append(y.clone())
        return real.cross_entropy(logits, y, *a, **k)

    monkeypatch.setattr(loop, "F", types.SimpleNamespace(cross_entropy=cross_entropy))
    return seen


@pytest.mark.parametrize("nan_as_down", [False, True])
def test_label2_rows_never_reach_the_loss(tmp_path, monkeypatch, nan_as_down):
    cfg = make_config(tmp_path, ensemble=1, epochs=1, reproduce_nan_as_down=nan_as_down)
    build_image_set(cfg, n_stocks=3)
    seen = _spy_on_loss(monkeypatch)
    marked = []

    def count_marked(module, args):  # label-2 images carry a full first column of ink
        x = args[0]
        col = x[:, 0, :, 0]
        marked.append(int((col == col.max()).all(dim=1).sum()))

    orig = loop.create_model

    def create_with_hook(name):
        m = orig(name)
        m.register_forward_pre_hook(count_marked)
        return m

    monkeypatch.setattr(loop, "create_model", create_with_hook)
    run = train_run(cfg)
    targets = torch.cat(seen["targets"])
    s = read_json(run / "summary.json")
    assert len(targets) == s["n_train"] + s["n_val"]  # one train + one validation pass
    assert set(targets.unique().tolist()) <= {0, 1}
    if nan_as_down:
        assert sum(marked) > 0 and read_json(run / "pool.json")["missing_as_down"] > 0
    else:
        assert sum(marked) == 0


def test_run_epoch_rejects_label_2(tmp_path):
    cfg = make_config(tmp_path)
    build_image_set(cfg, n_stocks=2)
    image_set, idx = insample_index(cfg)
    idx.labels[3] = 2
    ds = MemmapImages(image_set.directory, idx, {"mean": 0.1, "std": 0.3})
    dl = torch.utils.data.DataLoader(ds, batch_size=16, collate_fn=collate_batch)
    model = loop.create_model("I5")
    with pytest.raises(ValueError, match="label outside"):
        loop.run_epoch(model, dl, Runtime(torch.device("cpu"), "fp32", False), DistInfo())


def test_model_must_fit_the_image_set(tmp_path):
    cfg = make_config(tmp_path, model="I20")
    build_image_set(cfg, n_stocks=2)
    with pytest.raises(ValueError, match="I20 expects 64x60 images"):
        train_run(cfg)


def test_checkpoints_are_byte_identical_for_identical_weights(tmp_path):
    """The archive inside a torch file is named after the file; saved through memory it is fixed,
    so the same weights written twice (under different temporary names) give the same bytes."""
    from pipeline.train.loop import _save_torch

    w = {"a": torch.arange(6.0).reshape(2, 3), "b": torch.ones(4)}
    _save_torch(tmp_path / "one.pt", w)
    _save_torch(tmp_path / "two.pt", {k: v.clone() for k, v in w.items()})
    assert (tmp_path / "one.pt").read_bytes() == (tmp_path / "two.pt").read_bytes()
    back = torch.load(tmp_path / "two.pt", weights_only=True)
    assert torch.equal(back["a"], w["a"])
