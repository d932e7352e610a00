"""The interpretation toolkit (pipeline/interpret; METHOD 8.1): each method against an independent
computation or an exact property, on small real ChartCNNs, and the stage end to end on the tiny
synthetic experiment through its command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.config import ConfigError, load_config
from pipeline.images.render import layout, render_windows
from pipeline.interpret import (class_model, embedding, figures, filters, occlusion, regions,
                                robustness, saliency)
from pipeline.interpret.scoring import EnsembleScore, predict_p_up, to_pixels
from pipeline.models.cnn import ChartCNN, ModelSpec

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: on a shared 2-core machine two threads wait on each other per small op."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

W = 20
H, W3, P_ROWS, V_ROWS = layout(W)


def small_net(seed: int, channels: int = 4) -> ChartCNN:
    torch.manual_seed(seed)
    net = ChartCNN(ModelSpec(image_hw=(H, W3), n_blocks=3, base_channels=channels))
    for b in net.blocks:  # non-trivial running statistics, as after training
        c = b.bn.num_features
        b.bn.running_mean.copy_(torch.linspace(-0.1, 0.2, c))
        b.bn.running_var.copy_(torch.linspace(0.6, 1.5, c))
    return net.eval()


def score_of(*seeds: int, double: bool = False, cal: list[dict] | None = None) -> EnsembleScore:
    nets = [small_net(s) for s in seeds]
    if double:
        nets = [n.double() for n in nets]
    return EnsembleScore(nets, cal, mean=0.1, std=0.3)


def random_charts(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Real rendered I20 charts (with MA and volume) of random walks: (images, blocks, n_hist)."""
    rng = np.random.default_rng(seed)
    t = 2 * W
    r = rng.normal(0, 0.02, (n, t))
    c = 20 * np.cumprod(1 + r, axis=1)
    o = c * (1 + rng.normal(0, 0.005, (n, t)))
    hi = np.maximum(o, c) * (1 + np.abs(rng.normal(0, 0.01, (n, t))))
    lo = np.minimum(o, c) * (1 - np.abs(rng.normal(0, 0.01, (n, t))))
    vol = rng.lognormal(10, 0.5, (n, t))
    blocks = np.stack([o, hi, lo, c, vol, r], axis=2)
    n_hist = np.full(n, t)
    images, status = render_windows(blocks, n_hist, W)
    assert (status == -1).all()
    return images, blocks, n_hist


# --------------------------------------------------------------------------------------------------
# The explained score


def test_score_is_the_calibrated_ensemble_p_up():
    imgs, _, _ = random_charts(5)
    cal = [{"method": "platt", "scale": 0.7, "shift": 0.2}, {"method": "none"}]
    s = score_of(1, 2, cal=cal)
    p = predict_p_up(s, imgs)
    from pipeline.train.calibration import apply_calibration
    from pipeline.train.data import normalise

    raw = []
    with torch.no_grad():
        for m in s.members:
            raw.append(torch.softmax(m(normalise(imgs, 0.1, 0.3)), 1)[:, 1].double().numpy())
    want = (apply_calibration(raw[0], cal[0]) + apply_calibration(raw[1], cal[1])) / 2
    np.testing.assert_allclose(p, want, atol=1e-6)
    with torch.no_grad():
        np.testing.assert_allclose(torch.sigmoid(s(to_pixels(imgs))).double().numpy(), p, atol=1e-6)


# --------------------------------------------------------------------------------------------------
# Saliency


def test_input_gradient_equals_finite_differences():
    imgs, _, _ = random_charts(2, seed=3)
    s = score_of(4, 5, double=True)
    # Off the binary grid (pixels 0..255 plus noise): no ties in a max pool, where the gradient
    # is one of several one-sided derivatives and a central difference their mean.
    v = to_pixels(imgs, dtype=torch.float64) + torch.rand(imgs.shape, dtype=torch.float64,
                                                          generator=torch.Generator().manual_seed(0)) * 5
    g = saliency.input_gradient(s, v)
    assert g.shape == (2, H, W3)
    rng = np.random.default_rng(0)
    pix = [(int(rng.integers(H)), int(rng.integers(W3))) for _ in range(6)] + [(H - 1, W3 - 2), (10, W3 - 1)]
    h = 1e-4
    for i in range(2):
        for r, c in pix:
            up, dn = v[i:i + 1].clone(), v[i:i + 1].clone()
            up[0, r, c] += h
            dn[0, r, c] -= h
            with torch.no_grad():
                fd = float((s(up) - s(dn))[0]) / (2 * h)
            assert g[i, r, c] == pytest.approx(fd, rel=1e-4, abs=1e-9), (i, r, c)
    assert np.abs(g).max() > 0


def test_guided_backprop_keeps_the_forward_and_leaves_the_model_alone():
    imgs, _, _ = random_charts(3, seed=5)
    s = score_of(6)
    v = to_pixels(imgs)
    gb = saliency.guided_backprop(s, v)
    gcopy = saliency.guided_copy(s)
    with torch.no_grad():
        np.testing.assert_allclose(gcopy(v).numpy(), s(v).numpy(), rtol=1e-6)
    assert not any(isinstance(b.act, saliency.GuidedActivation) for m in s.members for b in m.blocks)
    g = saliency.input_gradient(s, v)
    assert gb.shape == g.shape and np.isfinite(gb).all()
    assert not np.allclose(gb, g)  # the backward rule really differs


def test_guided_backward_rule():
    x = torch.tensor([-1.0, 2.0, 3.0], requires_grad=True)
    act = saliency.GuidedActivation(torch.nn.LeakyReLU(0.01))
    y = act(x)
    assert torch.equal(y, torch.nn.functional.leaky_relu(x.detach(), 0.01))
    y.backward(torch.tensor([5.0, -1.0, 2.0]))
    assert x.grad.tolist() == [0.0, 0.0, 2.0]  # only positive inputs with positive gradients


# --------------------------------------------------------------------------------------------------
# Occlusion


def test_occlusion_of_a_blank_region_changes_nothing():
    imgs, _, _ = random_charts(3, seed=7)
    s = score_of(8)
    gap = np.zeros((1, H, W3), bool)
    gap[0, P_ROWS, :] = True  # the gap row between price and volume is always blank
    ink_day = occlusion.day_masks(W, H, P_ROWS, "price")[W - 1:W]
    eff = occlusion.occlusion_effects(s, imgs, np.concatenate([gap, ink_day]))
    assert eff.shape == (3, 2)
    assert (eff[:, 0] == 0).all()
    assert (np.abs(eff[:, 1]) > 0).all()


def test_patch_masks_tile_and_occlusion_map_spreads_each_patch():
    m = occlusion.patch_masks((H, W3), (8, 7))
    assert (m.sum(axis=0) == 1).all()  # every pixel in exactly one patch, the border cut
    imgs, _, _ = random_charts(2, seed=9)
    s = score_of(10)
    mp = occlusion.occlusion_map(s, imgs, (8, 7))
    eff = occlusion.occlusion_effects(s, imgs, m)
    k = 5
    r, c = np.argwhere(m[k])[0]
    np.testing.assert_allclose(mp[:, r, c], eff[:, k])
    vm = occlusion.day_masks(W, H, P_ROWS, "volume")
    assert vm.shape == (W, H, W3) and vm[3].sum() == V_ROWS and vm[3][P_ROWS + 1:, 3 * 3 + 1].all()


# --------------------------------------------------------------------------------------------------
# Robustness


def test_fgsm_flips_at_the_reported_epsilon_and_not_below():
    imgs, _, _ = random_charts(6, seed=11)
    s = score_of(12, 13)
    v = to_pixels(imgs)
    eps = [1.0, 4.0, 16.0, 64.0, 255.0]
    fl = robustness.fgsm_flip_points(s, v, eps, bisect_steps=5)
    assert len(fl) == 6 and fl["fgsm_eps"].notna().any()
    direction, up = robustness.attack_direction(s, v)
    for i in np.flatnonzero(fl["fgsm_eps"].notna().to_numpy()):
        def pred(e: float) -> bool:
            with torch.no_grad():
                return bool(s(robustness.fgsm(v[i:i + 1], direction[i:i + 1], e))[0] > 0)
        assert pred(float(fl.loc[i, "fgsm_eps"])) != bool(up[i])
        assert pred(float(fl.loc[i, "fgsm_eps_below"])) == bool(up[i])
        for e in eps:
            if e < fl.loc[i, "fgsm_eps_below"]:
                assert pred(e) == bool(up[i])
        assert fl.loc[i, "fgsm_eps_below"] < fl.loc[i, "fgsm_eps"]
    # the attacked image stays a valid picture: 0..255
    adv = robustness.fgsm(v, direction, 64.0)
    assert float(adv.min()) >= 0 and float(adv.max()) <= 255
    pg = robustness.pgd_flips(s, v, eps, steps=3)
    curve = robustness.flip_curve(pg, eps, "PGD")
    assert list(curve["eps"]) == eps and curve["share_flipped"].between(0, 1).all()


# --------------------------------------------------------------------------------------------------
# Embedding, filters, class models


def test_pca_explained_variance_descending_and_exact():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 8)) * np.array([5, 3, 2, 1, 1, 0.5, 0.2, 0.1])
    scores, ratio = embedding.pca(x, 5)
    assert scores.shape == (50, 5) and ratio.shape == (5,)
    assert (np.diff(ratio) <= 0).all()
    ev = np.sort(np.linalg.eigvalsh(np.cov(x.T)))[::-1]
    np.testing.assert_allclose(ratio, ev[:5] / ev.sum(), rtol=1e-10)
    np.testing.assert_allclose(scores.var(axis=0, ddof=1), ev[:5], rtol=1e-10)


def test_penultimate_features_feed_the_head_and_tsne_runs():
    imgs, _, _ = random_charts(12, seed=2)
    s = score_of(3)
    f = embedding.penultimate_features(s, imgs)
    net = s.members[0]
    assert f.shape == (12, net.spec.fc_in)
    with torch.no_grad():
        z = net(s.normalise(to_pixels(imgs)))
    lin = net.head[2]
    np.testing.assert_allclose(f @ lin.weight.detach().numpy().T + lin.bias.detach().numpy(), z.numpy(),
                               rtol=1e-4, atol=1e-4)
    ts = embedding.tsne(f, perplexity=4, seed=0)
    assert ts.shape == (12, 2) and np.isfinite(ts).all()
    with pytest.raises(ValueError):
        embedding.tsne(f, perplexity=12, seed=0)


def test_filters_and_their_figure_have_the_first_layer_channel_count():
    net = small_net(0, channels=6)
    f = filters.first_layer_filters(net)
    assert f.shape == (6, 5, 3)
    np.testing.assert_array_equal(f, net.blocks[0].conv.weight.detach().numpy()[:, 0])
    mosaic, rows, cols = filters.filter_mosaic(f)
    assert rows * cols >= 6 > (rows - 1) * cols
    tiles = sum(np.isfinite(mosaic[r * 6:r * 6 + 5, c * 4:c * 4 + 3]).all()
                for r in range(rows) for c in range(cols))
    assert tiles == 6
    ax = figures.filters_ax(f)
    assert ax.images[0].get_array().shape == mosaic.shape
    assert "6 kernels" in ax.get_title()


def test_class_model_images_separate_the_classes():
    s = score_of(14)
    imgs, p, trace = class_model.class_model_images(s, (H, W3), steps=10, lr=4.0, l2=0.05, tv=0.5)
    assert imgs.shape == (2, H, W3) and imgs.min() >= 0 and imgs.max() <= 255
    assert p[0] > p[1]
    assert trace[0, -1] > trace[0, 0] and trace[1, -1] > trace[1, 0]  # the objectives rose


def test_regularised_class_model_raises_p_up_and_is_smoother_than_plain_ascent():
    """The image-space regularisers (decay, blur, clipping, jitter) keep the ascent's direction
    (P(up) of the "up" image above the start's, of "down" below it) while removing the noise of
    the plain ascent; the result is the same for the same seed, and stays in [0, 255]."""
    s = score_of(14)
    args = dict(steps=40, lr=4.0, l2=0.5, tv=3.0, seed=3)
    imgs, p, _ = class_model.class_model_images(s, (H, W3), **args)
    plain, p_plain, _ = class_model.class_model_images(s, (H, W3), **{**args, "l2": 0.0, "tv": 0.0},
                                                       decay=0, blur_every=0, clip=0, contrib_clip=0,
                                                       jitter=0)
    start = class_model.start_image((H, W3), seed=3)
    assert start.shape == (H, W3) and 0 <= start.min() and start.max() < 2.0
    p0 = predict_p_up(s, torch.as_tensor(start[None], dtype=torch.float32))[0]
    assert p[0] > p0 + 0.02 and p[1] < p0 - 0.02
    assert imgs.min() >= 0 and imgs.max() <= 255 and imgs[0].max() > 20  # not faded to blank
    tv_reg, tv_plain = class_model.total_variation(imgs), class_model.total_variation(plain)
    assert (tv_reg < 0.5 * tv_plain).all(), (tv_reg, tv_plain)
    assert p_plain[0] > p0  # the plain ascent raises P(up) too, by its noise
    again, p_again, _ = class_model.class_model_images(s, (H, W3), **args)
    np.testing.assert_array_equal(again, imgs)
    np.testing.assert_array_equal(p_again, p)


def test_class_model_helpers():
    flat = np.full((1, 6, 5), 100.0)
    assert class_model.total_variation(flat)[0] == 0.0
    stripes = np.zeros((1, 4, 4))
    stripes[0, :, ::2] = 255.0  # every horizontal neighbour differs by 1 on the 0..1 scale
    assert class_model.total_variation(stripes)[0] == pytest.approx(1.0)
    v = torch.zeros(1, 9, 9, dtype=torch.float64)
    v[0, 4, 4] = 1.0
    b = class_model.gaussian_blur(v, 1.0)
    assert float(b.sum()) == pytest.approx(1.0) and float(b[0, 4, 4]) < 0.2
    np.testing.assert_allclose(b[0].numpy(), b[0].numpy().T, atol=1e-15)  # isotropic
    assert torch.equal(class_model.gaussian_blur(v, 0.0), v)


# --------------------------------------------------------------------------------------------------
# Regions and the concentration measure


def test_concentration_ratio():
    region = regions.last_days_mask(W, 5)
    assert region.sum() == H * 15
    flat = np.ones((2, H, W3))
    np.testing.assert_allclose(regions.concentration(flat, region), 1.0)
    inside = np.where(region, 1.0, 0.0)[None]
    np.testing.assert_allclose(regions.concentration(inside, region), W3 / 15)
    assert np.isnan(regions.concentration(np.zeros((1, H, W3)), region))[0]
    vm = regions.volume_mask(W)
    assert vm[P_ROWS + 1:].all() and not vm[:P_ROWS + 1].any()
    assert regions.volume_mask(W, 5)[:, : 3 * (W - 5)].sum() == 0


def test_ma_line_masks_are_the_drawn_ma_pixels():
    imgs, blocks, n_hist = random_charts(8, seed=21)
    m = regions.ma_line_masks(blocks, n_hist, W, check_images=imgs)
    assert m.shape == imgs.shape
    assert (m.sum(axis=(1, 2)) >= 3 * W - 2).all()  # one run in every column but the first and last
    assert not (m & (imgs == 0)).any() and not m[:, P_ROWS:].any()
    assert not m[:, :, 0].any() and not m[:, :, -1].any()
    # the MA is the only price ink left when the glyph rows are hidden in columns 3d+2 (close tick
    # only) -- so every column 3d+2 holds at most one non-MA ink pixel
    other = (imgs[:, :P_ROWS] > 0) & ~m[:, :P_ROWS]
    assert (other[:, :, 2::3].sum(axis=1) <= 1).all()
    with pytest.raises(ValueError, match="re-draw"):
        regions.ma_line_masks(blocks[::-1], n_hist, W, check_images=imgs)
    short = regions.ma_line_masks(blocks, np.full(8, 2 * W - 1), W)
    assert not short.any()


# --------------------------------------------------------------------------------------------------
# Config


@pytest.mark.parametrize("override, match", [
    ("interpret.methods=[saliency, gradcam]", "interpret.methods"),
    ("interpret.epsilons=[4, 2]", "interpret.epsilons"),
    ("interpret.epsilons=[0, 2]", "interpret.epsilons"),
    ("interpret.tsne_perplexity=200", "tsne_perplexity"),
    ("interpret.last_days=30", "last_days"),
    ("interpret.occlusion_patch=[8]", "occlusion_patch"),
    ("interpret.surge_quantile=1.5", "surge_quantile"),
    ("interpret.members=some", "interpret.members"),
    ("interpret.n_images=0", "n_images"),
    ("interpret.bogus=1", "interpret.bogus"),
])
def test_bad_interpret_settings_are_refused_at_load(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config("demo", [override])


@pytest.mark.parametrize("target", ["return", "vol_adjusted_return"])
def test_a_regression_run_is_refused_naming_the_target(tmp_path, target):
    from pipeline.errors import InputError
    from pipeline.interpret.core import run_interpret

    cfg = load_config("demo", [f"data_dir={tmp_path}", f"train.target={target}", "train.calibration=none"])
    with pytest.raises(InputError, match=f"train.target is '{target}'.*make gradcam"):
        run_interpret(cfg)


def test_defaults_load():
    cfg = load_config("demo")
    assert cfg.interpret.methods[0] == "filters"
    load_config("demo", ["interpret.methods=[saliency]", "interpret.tsne_perplexity=500"])  # no t-SNE


# --------------------------------------------------------------------------------------------------
# The stage, on the tiny synthetic experiment


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from report_fixture import tiny_experiment

    return tiny_experiment(tmp_path_factory)


SMALL = ["interpret.n_images=24", "interpret.occlusion_images=4", "interpret.robustness_images=4",
         "interpret.epsilons=[4, 32, 128]", "interpret.pgd_steps=2", "interpret.class_model_steps=10",
         "interpret.tsne_perplexity=5", "interpret.bisect_steps=2", "interpret.occlusion_patch=[16, 12]"]


@pytest.mark.slow
def test_stage_runs_through_the_cli_on_the_synthetic_market(tiny, tmp_path):
    from report_fixture import run_stage

    from pipeline import paths
    from pipeline.interpret.core import FIGURES, interpret_outputs

    cfg_path = tmp_path / "tiny_interp.yaml"
    cfg_path.write_text(tiny.config.read_text() + "interpret: {" + ", ".join(
        f"{o.split('=', 1)[0].split('.', 1)[1]}: {o.split('=', 1)[1]}" for o in SMALL) + "}\n")
    code, err = run_stage("interpret", cfg_path, tiny.root)
    assert code == 0, err
    cfg = load_config(cfg_path)
    out = paths.interpret_dir(cfg)
    for name in (*FIGURES, "maps.npz", "filters.npz", "class_model.npz", "sample.parquet",
                 "occlusion_days.parquet", "occlusion_regions.parquet", "embedding.parquet",
                 "flip_curve.csv", "planted_signal.csv", "config.yaml", "_DONE.json"):
        assert (out / name).exists(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_images"] == 24 and summary["source"] == "synthetic"
    assert summary["p_up_max_abs_diff_vs_predictions"] < 1e-3  # the same P(up) as predict's
    assert "regions_warning" not in summary  # the MA masks re-drew the stored images exactly
    assert summary["planted_signal"]["planted"] is True
    table = pd.read_csv(out / "planted_signal.csv")
    assert {"ma_line", "volume_area", "last_5_days", "ink"} <= set(table["region"])
    assert {"surge_days", "not_surge_days", "all"} <= set(table["subset"])
    assert {"input_gradient", "guided_backprop", "occlusion"} == set(table["method"])
    sample = pd.read_parquet(out / "sample.parquet")
    assert sample[["rev", "trend", "intra", "surge_dir"]].notna().all().all()
    assert list(sample.columns[:2]) == ["stock_id", "ticker"] and sample["ticker"].notna().all()
    days = pd.read_parquet(out / "occlusion_days.parquet")
    assert len(days) == 4 * 20 * 2 and set(days["part"]) == {"price", "volume"}
    assert len(pd.read_parquet(out / "embedding.parquet")) == 24
    figs, tables = interpret_outputs(cfg)
    assert [p.name for p, _ in figs] == list(FIGURES) and all(c for _, c in figs)
    assert "planted_signal.csv" in tables and "summary" in tables
    # up to date: a second run does nothing
    stamp = (out / "summary.json").stat().st_mtime_ns
    assert run_stage("interpret", cfg_path, tiny.root)[0] == 0
    assert (out / "summary.json").stat().st_mtime_ns == stamp
