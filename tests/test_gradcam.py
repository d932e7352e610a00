"""Grad-CAM (METHOD 8): the formula against independent computations, helpers, figures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from pipeline.evaluate.portfolios import pooled_deciles
from pipeline.gradcam.core import (
    ensemble_grad_cam,
    grad_cam,
    group_means,
    locate_rows,
    select_extremes,
)
from pipeline.gradcam.figures import average_maps_figure, gradcam_panel


class Block(nn.Module):
    def __init__(self, c_in: int, c_out: int, bn: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, (3, 3), padding=(1, 1))
        self.bn = nn.BatchNorm2d(c_out) if bn else nn.Identity()
        self.act = nn.LeakyReLU(0.01)
        self.pool = nn.MaxPool2d((2, 1), stride=(2, 1), ceil_mode=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.act(self.bn(self.conv(x))))


class TinyNet(nn.Module):
    """Same attribute structure as ChartCNN (.blocks of conv/bn/act/pool, .head) on 7x6 images."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([Block(1, 3), Block(3, 4)])
        # 7 -> pool ceil 4 -> 2 rows; 6 columns; 4 channels
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(4 * 2 * 6, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for b in self.blocks:
            x = b(x)
        return self.head(x)


def tiny_net(seed: int = 0) -> TinyNet:
    torch.manual_seed(seed)
    net = TinyNet()
    # Non-trivial running statistics so eval-mode BatchNorm differs from train-mode BatchNorm.
    for b in net.blocks:
        c = b.bn.num_features
        b.bn.running_mean.copy_(torch.linspace(-0.2, 0.3, c))
        b.bn.running_var.copy_(torch.linspace(0.5, 2.0, c))
        b.bn.weight.data.copy_(torch.linspace(0.8, 1.3, c))
        b.bn.bias.data.copy_(torch.linspace(-0.1, 0.2, c))
    return net.double()


def np_bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) interpolation weights of bilinear resizing with align_corners=False."""
    m = np.zeros((n_out, n_in))
    scale = n_in / n_out
    for i in range(n_out):
        src = max((i + 0.5) * scale - 0.5, 0.0)
        i0 = min(int(np.floor(src)), n_in - 1)
        i1 = min(i0 + 1, n_in - 1)
        lam = src - i0
        m[i, i0] += 1 - lam
        m[i, i1] += lam
    return m


def reference_cam(net: TinyNet, x: torch.Tensor, layer_point: str, target=None) -> list[np.ndarray]:
    """Independent Grad-CAM: explicit forward with retained activations, numpy for the rest."""
    net.eval()
    xin = x.clone().requires_grad_(True)
    acts = []
    h = xin
    for b in net.blocks:
        a = b.act(b.bn(b.conv(h)))
        p = b.pool(a)
        (acts.append(a) if layer_point == "pre_pool" else acts.append(p))
        h = p
    logits = net.head(h)
    cls = logits.argmax(1) if target is None else torch.as_tensor(target).expand(len(x))
    out = []
    for a in acts:
        maps = []
        for n in range(len(x)):
            (g,) = torch.autograd.grad(logits[n, cls[n]], a, retain_graph=True)
            gn = g[n].detach().numpy()
            an = a[n].detach().numpy()
            alpha = gn.reshape(gn.shape[0], -1).mean(axis=1)
            cam = np.maximum(np.tensordot(alpha, an, axes=1), 0)
            up = np_bilinear_matrix(cam.shape[0], x.shape[2]) @ cam @ np_bilinear_matrix(
                cam.shape[1], x.shape[3]).T
            maps.append(up / up.max() if up.max() > 0 else up)
        out.append(np.stack(maps))
    return out


@pytest.mark.parametrize("layer_point", ["pre_pool", "post_pool"])
def test_grad_cam_matches_independent_formula(layer_point: str) -> None:
    net = tiny_net()
    torch.manual_seed(1)
    x = torch.randn(5, 1, 7, 6, dtype=torch.float64)
    net.train()  # grad_cam must switch to eval mode itself and restore the mode afterwards
    maps = grad_cam(net, x, layer_point=layer_point)
    assert net.training
    ref = reference_cam(net, x, layer_point)
    assert len(maps) == 2
    for m, r in zip(maps, ref):
        assert m.shape == (5, 7, 6) and m.dtype == np.float32
        np.testing.assert_allclose(m, r, atol=2e-6)
        assert m.min() >= 0 and m.max() <= 1
    # Upsampling is non-trivial here: block-2 maps (pre_pool 4x6, post_pool 2x6) grow to 7x6.
    assert maps[1].shape[1] == 7


def test_grad_cam_given_target_matches_reference() -> None:
    net = tiny_net(3)
    torch.manual_seed(2)
    x = torch.randn(4, 1, 7, 6, dtype=torch.float64)
    for c in (0, 1):
        for m, r in zip(grad_cam(net, x, target=c), reference_cam(net, x, "pre_pool", target=c)):
            np.testing.assert_allclose(m, r, atol=2e-6)
    # a per-image target equals the predicted class when it is the argmax
    pred = net.eval()(x).argmax(1).numpy()
    for m, r in zip(grad_cam(net, x, target=pred), grad_cam(net, x)):
        np.testing.assert_array_equal(m, r)


class LinearNet(nn.Module):
    """One block with identity conv and ReLU, then a linear head: Grad-CAM in closed form."""

    def __init__(self, w_up: np.ndarray, w_down: np.ndarray) -> None:
        super().__init__()
        blk = nn.Module()
        blk.conv = nn.Conv2d(1, 1, 1, bias=False)
        blk.conv.weight.data.fill_(1.0)
        blk.bn = nn.Identity()
        blk.act = nn.ReLU()
        blk.pool = nn.Identity()
        self.blocks = nn.ModuleList([blk])
        self.lin = nn.Linear(w_up.size, 2, bias=False)
        self.lin.weight.data = torch.tensor(np.stack([w_down.ravel(), w_up.ravel()]), dtype=torch.float64)
        self.head = nn.Sequential(nn.Flatten(), self.lin)
        self.double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.blocks[0]
        return self.head(b.pool(b.act(b.bn(b.conv(x)))))


def test_grad_cam_closed_form_linear_model() -> None:
    # y_c = sum_ij W_c[i,j] A_ij, so dy_c/dA = W_c, alpha = mean(W_c), L = ReLU(alpha * A).
    w_up = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])    # mean 1.0 > 0
    w_down = np.array([[-1.0, -1.0, 0.0], [0.0, 0.0, -1.0]])  # mean -0.5 < 0
    net = LinearNet(w_up, w_down)
    img = np.array([[0.0, 1.0, 2.0], [4.0, 0.0, 1.0]])  # A = ReLU(img) = img, max 4
    x = torch.tensor(img[None, None])
    # predicted class: y_up = 2 + 6 = 8 > y_down = -1 - 1 = -2 -> class 1
    (m,) = grad_cam(net, x)
    np.testing.assert_allclose(m[0], img / 4.0, atol=1e-7)
    # target 0: alpha = -0.5 -> ReLU kills everything; an all-zero map stays zero (no 0/0)
    (m0,) = grad_cam(net, x, target=0)
    assert np.all(m0 == 0) and not np.isnan(m0).any()
    # post_pool hooks block.pool (identity here): same maps
    (mp,) = grad_cam(net, x, layer_point="post_pool")
    np.testing.assert_array_equal(mp, m)


def test_grad_cam_eval_mode_dropout_off_and_frozen_weights() -> None:
    net = tiny_net(5)
    for p in net.parameters():
        p.requires_grad_(False)  # the maps must not depend on weights requiring grad
    x = torch.randn(3, 1, 7, 6, dtype=torch.float64)
    a = grad_cam(net, x)
    b = grad_cam(net, x)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)  # deterministic: dropout is off
    for u, r in zip(a, reference_cam(net, x, "pre_pool")):
        np.testing.assert_allclose(u, r, atol=2e-6)


def test_grad_cam_errors() -> None:
    net = tiny_net()
    x = torch.randn(2, 1, 7, 6, dtype=torch.float64)
    with pytest.raises(ValueError, match="layer_point"):
        grad_cam(net, x, layer_point="middle")
    with pytest.raises(ValueError, match="target"):
        grad_cam(net, x, target=[0, 1, 1])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        grad_cam(net, x, target=2)
    with pytest.raises(ValueError, match="blocks"):
        grad_cam(nn.Linear(3, 2), x)
    with pytest.raises(ValueError, match="N, 1, H, W"):
        grad_cam(net, x[0])


def test_grad_cam_on_chart_cnn_shapes() -> None:
    from pipeline.models.registry import create_model

    torch.manual_seed(0)
    model = create_model("I20")
    x = torch.randn(2, 1, 64, 60)
    for lp in ("pre_pool", "post_pool"):
        maps = grad_cam(model, x, layer_point=lp)
        assert len(maps) == 3
        for m in maps:
            assert m.shape == (2, 64, 60)
            assert m.min() >= 0 and m.max() <= 1
            peaks = m.reshape(2, -1).max(1)
            assert np.all((np.abs(peaks - 1) < 1e-6) | (peaks == 0))


def test_ensemble_grad_cam() -> None:
    net = tiny_net(0)
    x = torch.randn(4, 1, 7, 6, dtype=torch.float64)
    single = grad_cam(net, x)
    for u, v in zip(ensemble_grad_cam([net], x), single):
        np.testing.assert_array_equal(u, v)
    # two copies of the same member: the mean of identical normalised maps is the map itself
    for u, v in zip(ensemble_grad_cam([net, tiny_net(0)], x), single):
        np.testing.assert_allclose(u, v, atol=1e-6)
    # two different members: the average of their maps for the ensemble's class, renormalised
    other = tiny_net(7)
    with torch.no_grad():
        p = (torch.softmax(net.eval()(x), 1) + torch.softmax(other.eval()(x), 1)) / 2
    cls = p.argmax(1)
    a, b = grad_cam(net, x, target=cls), grad_cam(other, x, target=cls)
    for e, u, v in zip(ensemble_grad_cam([net, other], x), a, b):
        s = (u + v) / 2
        peak = s.reshape(len(s), -1).max(1)[:, None, None]
        np.testing.assert_allclose(e, np.where(peak > 0, s / np.where(peak > 0, peak, 1), 0), atol=1e-6)
    with pytest.raises(ValueError):
        ensemble_grad_cam([], x)


class RegressionNet(nn.Module):
    """A one-output TinyNet (a regression run's head, METHOD 3.6) and, with ``as_logits``, the same
    network written as a classifier whose logits are (-o, o): Grad-CAM of class 1 / class 0 of the
    one-output model must be that of +o / -o."""

    def __init__(self, seed: int, as_logits: bool = False, bias: float = 0.0) -> None:
        super().__init__()
        base = tiny_net(seed)
        self.blocks = base.blocks
        lin = nn.Linear(4 * 2 * 6, 1).double()
        torch.manual_seed(seed + 100)
        nn.init.normal_(lin.weight, 0.0, 0.3)
        lin.bias.data.fill_(bias)
        layers = [nn.Flatten(), nn.Dropout(0.5), lin] + ([MinusAndPlus()] if as_logits else [])
        self.head = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for b in self.blocks:
            x = b(x)
        return self.head(x)


class MinusAndPlus(nn.Module):
    """(N, 1) -> (N, 2) logits (-o, o)."""

    def forward(self, o: torch.Tensor) -> torch.Tensor:
        return torch.cat([-o, o], dim=1)


def test_grad_cam_of_a_regression_output_raises_and_lowers_the_prediction() -> None:
    reg = RegressionNet(4, bias=-1.2)
    twin = RegressionNet(4, as_logits=True, bias=-1.2)
    torch.manual_seed(3)
    x = torch.randn(6, 1, 7, 6, dtype=torch.float64)
    with torch.no_grad():
        out = reg.eval()(x)[:, 0]
    assert (out > 0).any() and (out <= 0).any()  # both predicted sides occur
    for c in (0, 1):
        got = grad_cam(reg, x, target=c)
        for m, r in zip(got, reference_cam(twin, x, "pre_pool", target=c)):
            np.testing.assert_allclose(m, r, atol=2e-6)
    # "up" and "down" explain opposite directions: not the same maps
    assert not np.allclose(grad_cam(reg, x, target=1)[1], grad_cam(reg, x, target=0)[1])
    # No target: each image's predicted side, up where the prediction is above 0
    side = (out > 0).long()
    for m, r in zip(grad_cam(reg, x), grad_cam(reg, x, target=side)):
        np.testing.assert_array_equal(m, r)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        grad_cam(reg, x, target=2)


def test_ensemble_predicted_class_of_regression_members_is_the_sign_of_their_mean() -> None:
    from pipeline.gradcam.core import ensemble_predicted_class

    torch.manual_seed(5)
    x = torch.randn(8, 1, 7, 6, dtype=torch.float64)
    a, b = RegressionNet(1, bias=0.2), RegressionNet(2, bias=-0.1)
    with torch.no_grad():
        mean = (a.eval()(x) + b.eval()(x))[:, 0] / 2
    np.testing.assert_array_equal(ensemble_predicted_class([a, b], x).numpy(), (mean > 0).long().numpy())
    # all members above 0 everywhere: every image is predicted up
    hi = [RegressionNet(1, bias=50.0), RegressionNet(2, bias=50.0)]
    assert bool((ensemble_predicted_class(hi, x) == 1).all())
    # ... yet a "down" map (target 0) still explains what lowers the prediction
    for m, r in zip(ensemble_grad_cam(hi, x, target=0),
                    ensemble_grad_cam([RegressionNet(1, True, 50.0), RegressionNet(2, True, 50.0)], x,
                                      target=0)):
        np.testing.assert_allclose(m, r, atol=1e-6)


# --------------------------------------------------------------------------------------------------
# Selection and averaging helpers


def test_select_extremes_hand_fixture() -> None:
    d = pd.Timestamp("2019-01-31")
    pred = pd.DataFrame({"stock_id": [5, 3, 9, 1, 2, 7], "date": [d] * 6,
                         "p_up": [0.9, 0.1, 0.5, 0.9, np.nan, 0.2]})
    sel = select_extremes(pred, 2)
    # up: 0.9 (stock 1 before 5 by tie-break), down: 0.1 (3), 0.2 (7); NaN ignored
    assert sel["stock_id"].tolist() == [1, 5, 3, 7]
    assert sel["side"].tolist() == ["up", "up", "down", "down"]
    assert sel["p_up"].tolist() == [0.9, 0.9, 0.1, 0.2]
    assert list(sel.columns) == ["stock_id", "date", "p_up", "side"]
    # a ticker column of the predictions travels with its rows
    named = select_extremes(pred.assign(ticker=[f"T{i}" for i in pred["stock_id"]]), 2)
    assert list(named.columns) == ["stock_id", "ticker", "date", "p_up", "side"]
    assert named["ticker"].tolist() == ["T1", "T5", "T3", "T7"]
    with pytest.raises(ValueError, match="need 6"):
        select_extremes(pred, 3)
    with pytest.raises(ValueError, match="p_up"):
        select_extremes(pred.drop(columns="p_up"), 1)


def test_locate_rows() -> None:
    d1, d2 = pd.Timestamp("2019-01-31"), pd.Timestamp("2019-02-28")
    labels = pd.DataFrame({"stock_id": np.array([1, 1, 2], np.int32), "date": [d1, d2, d1]})
    keys = pd.DataFrame({"stock_id": [2, 1], "date": [d1, d2]})
    np.testing.assert_array_equal(locate_rows(labels, keys), [2, 1])
    # label tables may store microseconds and predictions nanoseconds: same instants must match
    lab_us = labels.assign(date=labels["date"].astype("datetime64[us]"))
    np.testing.assert_array_equal(locate_rows(lab_us, keys.assign(
        date=keys["date"].astype("datetime64[ns]"))), [2, 1])
    with pytest.raises(ValueError, match="stock_id 3"):
        locate_rows(labels, pd.DataFrame({"stock_id": [3], "date": [d1]}), where="labels_2019")


def test_pooled_deciles_hand_fixture() -> None:
    p = np.arange(20, dtype=float)  # breakpoints 1.9, 3.8, ..., 17.1
    d = pooled_deciles(p)
    np.testing.assert_array_equal(d, np.repeat(np.arange(1, 11), 2))
    # a value equal to the 10th percentile belongs to D1 (D1 = [p0, p10])
    q = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0])  # p10 = 1.0
    assert pooled_deciles(q)[1] == 1 and pooled_deciles(q)[2] == 2
    with pytest.raises(ValueError):
        pooled_deciles(np.array([0.1, np.nan]))


def test_group_means() -> None:
    v = np.arange(8, dtype=float).reshape(4, 1, 2)
    sums, n = group_means(v, np.array([1, 0, 1, -1]), 3)
    np.testing.assert_array_equal(n, [1, 2, 0])
    np.testing.assert_array_equal(sums[0], v[1])
    np.testing.assert_array_equal(sums[1], v[0] + v[2])
    np.testing.assert_array_equal(sums[2], 0)


# --------------------------------------------------------------------------------------------------
# Figures


def test_gradcam_panel_axes() -> None:
    rng = np.random.default_rng(0)
    n, layers = 3, 3
    imgs = rng.integers(0, 2, (2 * n, 64, 60), dtype=np.uint8) * 255
    maps = [rng.random((2 * n, 64, 60)).astype(np.float32) for _ in range(layers)]
    fig = gradcam_panel(imgs, maps, ["up"] * n + ["down"] * n, rng.random(2 * n), title="t")
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(bars) == 2  # one colour scale per panel
    assert len(fig.axes) - len(bars) == 2 * (1 + layers) * n
    labels = [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel() and ax not in bars]
    assert labels == ["image", "conv1", "conv2", "conv3"] * 2
    with pytest.raises(ValueError, match="same positive number"):
        gradcam_panel(imgs, maps, ["up"] * (2 * n), rng.random(2 * n))
    with pytest.raises(ValueError, match="layer 1"):
        gradcam_panel(imgs, [m[:, :10] for m in maps], ["up"] * n + ["down"] * n, rng.random(2 * n))


def test_gradcam_panel_captions_for_a_regression_run() -> None:
    rng = np.random.default_rng(2)
    imgs = rng.integers(0, 2, (4, 32, 15), dtype=np.uint8) * 255
    maps = [rng.random((4, 32, 15)).astype(np.float32)]
    pred = np.array([0.0312, 0.0101, 0.0042, -0.0213])
    fig = gradcam_panel(imgs, maps, ["up", "up", "down", "down"], pred, regression=True)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["prediction=+0.0312", "prediction=+0.0101", "prediction=+0.0042",
                      "prediction=-0.0213"]
    heads = [sf._suptitle.get_text() for sf in fig.subfigs]
    assert heads == ['"up": 2 highest-prediction images (maps: what raises the prediction)',
                     '"down": 2 lowest-prediction images (maps: what lowers the prediction)']
    cls = gradcam_panel(imgs, maps, ["up", "up", "down", "down"], [0.7, 0.6, 0.4, 0.3])
    assert [ax.get_title() for ax in cls.axes if ax.get_title()][0] == "P(up)=0.700"
    assert "P(up)" in cls.subfigs[0]._suptitle.get_text()


def test_average_maps_figure_axes() -> None:
    rng = np.random.default_rng(1)
    dec = (rng.random((10, 32, 15)) * 255, [rng.random((10, 32, 15)) for _ in range(2)])
    rea = (rng.random((2, 32, 15)) * 255, [rng.random((2, 32, 15)) for _ in range(2)])
    fig = average_maps_figure([("deciles", *dec, [f"D{i}" for i in range(1, 11)]),
                               ("realised", *rea, ["up", "down"])])
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(fig.axes) - len(bars) == 3 * 10 + 3 * 2 and len(bars) == 2
    with pytest.raises(ValueError, match="column titles"):
        average_maps_figure([("deciles", *dec, ["D1"])])


# --------------------------------------------------------------------------------------------------
# The stage end to end on a tiny experiment (real train and predict stages)


@pytest.mark.slow
def test_run_gradcam_end_to_end(tmp_path) -> None:
    from interp_experiment import make_tiny_experiment

    from pipeline import paths
    from pipeline.gradcam.stage import run_gradcam
    from pipeline.io import read_json
    from pipeline.images.store import ImageSet
    from pipeline.predict.core import predict_run
    from pipeline.train.data import normalise
    from pipeline.runs import load_ensemble
    from pipeline.train.loop import train_run

    cfg = make_tiny_experiment(tmp_path)
    run = train_run(cfg)
    predict_run(cfg)
    out = run_gradcam(cfg)
    assert out == paths.gradcam_dir(cfg)
    for f in ("panel.png", "averages.png"):
        assert (out / f).stat().st_size > 5000
    assert (out / "config.yaml").exists()

    # selection: the 3 highest and 3 lowest P(up) of the last test year (2002)
    pred = pd.read_parquet(run / "predictions.parquet")
    p02 = pred[pd.to_datetime(pred["date"]).dt.year == 2002]
    sel = pd.read_parquet(out / "selection.parquet")
    assert list(sel.columns) == ["stock_id", "ticker", "date", "p_up", "side"]
    names = pred.drop_duplicates("stock_id").set_index("stock_id")["ticker"]
    pd.testing.assert_series_equal(sel["ticker"], names.loc[sel["stock_id"]].reset_index(drop=True),
                                   check_names=False)
    assert sel["side"].tolist() == ["up"] * 3 + ["down"] * 3
    np.testing.assert_allclose(sel["p_up"][:3], np.sort(p02["p_up"])[::-1][:3])
    np.testing.assert_allclose(sel["p_up"][3:], np.sort(p02["p_up"])[:3])

    # maps.npz: no pickle; images are the image-set rows; maps recomputed independently
    z = np.load(out / "maps.npz", allow_pickle=False)
    assert sorted(z.files) == ["date", "images", "layer_1", "layer_2", "layer_3", "p_up", "side",
                               "stock_id"]
    iset = ImageSet(paths.images_dir(cfg, "I20/month"))
    lab = iset.labels(2002)
    rows = [int(np.flatnonzero((lab["stock_id"] == s) & (lab["date"] == pd.Timestamp(d)))[0])
            for s, d in zip(sel["stock_id"], sel["date"])]
    np.testing.assert_array_equal(z["images"], iset.images(2002)[rows])
    norm = read_json(run / "norm.json")
    ref = grad_cam(load_ensemble(run, [0]).members[0], normalise(z["images"], norm["mean"], norm["std"]))
    for k in range(3):
        np.testing.assert_allclose(z[f"layer_{k + 1}"], ref[k], atol=1e-5)
        assert z[f"layer_{k + 1}"].shape == (6, 64, 60)

    # averages: counts add up to the sample; realised groups exclude missing labels
    a = np.load(out / "averages.npz", allow_pickle=False)
    n_year = int(p02["p_up"].notna().sum())
    assert int(a["decile_count"].sum()) == min(40, n_year)
    assert a["decile_images"].shape == (10, 64, 60) and a["decile_layer_3"].shape == (10, 64, 60)
    assert int(a["realised_count"].sum()) <= min(40, n_year)
    assert a["realised_layer_1"].min() >= 0 and a["realised_layer_1"].max() <= 1

    # resumable: nothing is rewritten on a second call with the same inputs
    before = (out / "panel.png").stat().st_mtime_ns
    run_gradcam(cfg)
    assert (out / "panel.png").stat().st_mtime_ns == before

    cfg.gradcam.year = 1999
    with pytest.raises(ValueError, match="gradcam.year 1999 has no predictions"):
        run_gradcam(cfg)


@pytest.mark.slow
def test_run_gradcam_refuses_predictions_older_than_the_run(tmp_path) -> None:
    from interp_experiment import make_tiny_experiment

    from pipeline import paths
    from pipeline.gradcam.stage import run_gradcam
    from pipeline.io import StaleInputError, mark_done
    from pipeline.predict.core import predict_run
    from pipeline.train.loop import train_run

    cfg = make_tiny_experiment(tmp_path)
    train_run(cfg)
    predict_run(cfg)
    mark_done(paths.run_dir(cfg), "retrained", "_TRAIN_DONE")  # the run changed after predict
    with pytest.raises(StaleInputError, match="older than the trained run"):
        run_gradcam(cfg)


@pytest.mark.slow
def test_run_gradcam_on_a_regression_run(tmp_path) -> None:
    """A one-output run (train.target return): selected on its prediction, "up" maps explain the
    output, "down" maps its negative (what lowers the prediction), captions say "prediction"."""
    from interp_experiment import make_tiny_experiment

    from pipeline.gradcam.stage import run_gradcam
    from pipeline.io import read_json
    from pipeline.predict.core import predict_run
    from pipeline.runs import load_ensemble
    from pipeline.train.data import normalise
    from pipeline.train.loop import train_run

    cfg = make_tiny_experiment(tmp_path, overrides=["train.target=return", "train.head_init=base_rate"])
    run = train_run(cfg)
    assert run.name.startswith("I20_R20-reg")
    predict_run(cfg)
    out = run_gradcam(cfg)
    pred = pd.read_parquet(run / "predictions.parquet")
    p02 = pred[pd.to_datetime(pred["date"]).dt.year == 2002]
    sel = pd.read_parquet(out / "selection.parquet")
    assert sel["side"].tolist() == ["up"] * 3 + ["down"] * 3
    np.testing.assert_allclose(sel["p_up"][:3], np.sort(p02["p_up"])[::-1][:3])
    np.testing.assert_allclose(sel["p_up"][3:], np.sort(p02["p_up"])[:3])
    z = np.load(out / "maps.npz", allow_pickle=False)
    norm = read_json(run / "norm.json")
    member = load_ensemble(run, [0]).members[0]
    x = normalise(z["images"], norm["mean"], norm["std"])
    raises, lowers = grad_cam(member, x, target=1), grad_cam(member, x, target=0)
    for k in range(3):
        np.testing.assert_allclose(z[f"layer_{k + 1}"][:3], raises[k][:3], atol=1e-5)
        np.testing.assert_allclose(z[f"layer_{k + 1}"][3:], lowers[k][3:], atol=1e-5)
    # the "down" maps are not those of the output itself (what a softmax-assuming pass gives)
    assert not np.allclose(z["layer_1"][3:], raises[0][3:], atol=1e-3)
    a = np.load(out / "averages.npz", allow_pickle=False)
    assert int(a["decile_count"].sum()) == min(40, len(p02))
    assert (out / "panel.png").stat().st_size > 5000 and (out / "averages.png").stat().st_size > 5000
