"""The interpretation stage (``python -m pipeline.interpret``; docs/method.md section 8.1).

Reads a trained run (model card, members), its predictions and its test images; writes to
``data/<name>/interpret/<run>/`` (:func:`pipeline.paths.interpret_dir`):

    filters.png, filters.npz                 first-layer kernels (C, kh, kw)
    saliency.png, average_maps.png           input gradient, guided backprop, occlusion maps
    maps.npz                                 images uint8 (N, H, 3W), the three maps float32 (N, H, 3W)
    sample.parquet                           the N explained images: stock_id, date, p_up, ret,
                                             planted features (synthetic market) and, with
                                             robustness, fgsm_eps, fgsm_eps_below, pgd_eps
    occlusion.png, occlusion_days.parquet    per image and day: P(up) change from blanking the
                                             day's glyph (part=price) or volume bar (part=volume)
    occlusion_regions.parquet                per image and named region: P(up) change
    embedding.png, embedding.parquet         PCA and t-SNE of the penultimate features
    class_model.png, class_model.npz         regularised gradient-ascent images for up / down
    robustness.png, flip_curve.csv           share flipped against eps, FGSM and PGD
    planted_signal.png, planted_signal.csv   the concentration ratios (regions.py)
    summary.json                             the headline numbers of every method
    config.yaml, _DONE.json

:func:`interpret_outputs` lists the figures with captions and loads the tables, for a report.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.errors import InputError

log = logging.getLogger(__name__)

FIGURES = {
    "filters.png": "First-layer filters: the {c} kernels of the first convolution (blue negative, "
                   "red positive weights on normalised pixels).",
    "saliency.png": "Saliency of the three highest- and three lowest-P(up) sampled images: input "
                    "gradient and guided backpropagation of the log-odds of P(up), and the "
                    "patch-occlusion effect (red: raises P(up)).",
    "average_maps.png": "Mean image and mean |map| over the sampled images: where each method "
                        "puts its weight on average.",
    "occlusion.png": "Occlusion by day: mean change in P(up) from blanking each day's bar (price "
                     "glyph) or its volume bar, +-2 standard errors.",
    "embedding.png": "Penultimate features in two dimensions (PCA, t-SNE), coloured by P(up) and "
                     "by the realised return.",
    "class_model.png": "Class-model images: the charts gradient ascent finds most 'up' and most "
                       "'down' (regularised), with their P(up).",
    "robustness.png": "Adversarial robustness: share of predictions flipped by an L-infinity "
                      "pixel budget eps (FGSM, PGD), and each image's FGSM flip point.",
    "planted_signal.png": "Concentration of each map on the regions where the synthetic market "
                          "plants its signal (1 = spread evenly).",
}
TABLES = ("sample.parquet", "occlusion_days.parquet", "occlusion_regions.parquet",
          "embedding.parquet", "flip_curve.csv", "planted_signal.csv")
OTHER_FILES = ("filters.npz", "maps.npz", "class_model.npz", "summary.json", "_DONE.json")


def _year(cfg, pred_years, image_years) -> int:  # noqa: ANN001
    """cfg.interpret.year, or the last test year present in both predictions and images."""
    from pipeline.config import split_years

    first, last = split_years(cfg.train)[1]
    have = sorted(set(int(y) for y in pred_years) & set(int(y) for y in image_years))
    if cfg.interpret.year is not None:
        if cfg.interpret.year not in have:
            raise InputError(f"interpret.year {cfg.interpret.year} has no predictions with images; "
                             f"years available: {have}")
        return int(cfg.interpret.year)
    oos = [y for y in have if first <= y <= last]
    if not oos:
        raise InputError(f"no test year ({first}-{last}) has both predictions and images")
    return oos[-1]


def panel_blocks(panel_dir: Path, keys: pd.DataFrame, window: int, year: int
                 ) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """Renderer input of each (stock_id, date) in ``keys`` and the planted features there.

    Reads the panel rows of those stocks from the year before ``year`` on (enough history for a
    2W-record block and the 20-record features). Returns (blocks float64 (n, 2W, 6), n_hist (n,),
    features DataFrame rev, trend, intra, surge_dir aligned with ``keys``).
    """
    from pipeline.images import windows
    from pipeline.panel.store import read_panel
    from pipeline.panel.synthetic import planted_features

    panel = read_panel(panel_dir, years=[year - 1, year], stock_ids=np.unique(keys["stock_id"]))
    panel["date"] = pd.to_datetime(panel["date"])
    feats = planted_features(panel)
    idx = pd.MultiIndex.from_arrays([panel["stock_id"].astype(np.int64), panel["date"]])
    pos = idx.get_indexer(pd.MultiIndex.from_arrays([keys["stock_id"].astype(np.int64),
                                                    pd.to_datetime(keys["date"])]))
    if (pos < 0).any():
        k = keys.iloc[int(np.flatnonzero(pos < 0)[0])]
        raise InputError(f"{panel_dir}: no panel record for stock_id {k['stock_id']} on {k['date']}")
    ids, offsets = windows.stock_offsets(panel["stock_id"].to_numpy())
    start = offsets[np.searchsorted(ids, panel["stock_id"].to_numpy()[pos])]
    n_hist = windows.history_lengths(pos, start, window)
    values = panel[windows.RENDER_COLUMNS].to_numpy(np.float64)
    blocks = windows.gather_blocks(values, pos.astype(np.int64), n_hist, window)
    f = feats.iloc[pos][["rev", "trend", "intra", "surge_dir"]].reset_index(drop=True)
    return blocks, n_hist, f


def _run_interpret(cfg) -> Path:  # noqa: ANN001, C901 - one stage, read top to bottom
    from pipeline import paths
    from pipeline.config import save_resolved, section_hash
    from pipeline.gradcam.core import locate_rows
    from pipeline.runs import member_indices
    from pipeline.images.render import layout
    from pipeline.images.store import ImageSet, label_suffix
    from pipeline.interpret import (class_model, embedding, figures, filters, occlusion, regions,
                                    robustness, saliency)
    from pipeline.interpret.scoring import EnsembleScore, predict_p_up, to_pixels
    from pipeline.io import (atomic_path, input_stamp, is_done, mark_done, read_json, write_figure,
                             write_json, write_parquet)
    from pipeline.runs import load_ensemble, read_predictions, require_current_predictions
    from pipeline.train.data import norm_for_year
    from pipeline.train.ddp import resolve_device
    from pipeline.train.loop import set_threads

    if cfg.train.target != "class":
        # Every method here explains the log-odds of P(up) (pipeline.interpret.scoring); a one-output
        # regression has no probability. Its Grad-CAM maps explain the prediction (make gradcam).
        raise InputError(f"make interpret explains a classifier's P(up), but train.target is "
                         f"{cfg.train.target!r} (run {paths.run_name(cfg)}): use train.target=class, "
                         "or make gradcam for a regression run's maps")
    t0 = time.perf_counter()
    it = cfg.interpret
    run = paths.run_dir(cfg)
    out = paths.interpret_dir(cfg)
    pred_path, train_marker = require_current_predictions(run)
    # As gradcam: the trained run's settings hash and the predictions' stamp (their content).
    stamp = input_stamp(pred_path)
    settings = section_hash(it, {"train": read_json(train_marker).get("hash"),
                                 "image_set": cfg.train.image_set, "source": cfg.panel.source,
                                 "predictions": stamp})
    if is_done(out, settings):
        log.info("interpret: %s is up to date", out)
        return out
    # Remove what an earlier run with other settings wrote, so no figure outlives its settings.
    for name in (*FIGURES, *TABLES, *OTHER_FILES):
        (out / name).unlink(missing_ok=True)

    # ---- inputs: a seeded sample of one test year's images
    imgset = ImageSet(paths.images_dir(cfg, cfg.train.image_set))
    suffix = label_suffix(cfg.train.horizon, cfg.train.label_return)
    ret_col = f"ret_{suffix}"
    pred = read_predictions(pred_path, ["stock_id", "date", "p_up", ret_col])
    pred["date"] = pd.to_datetime(pred["date"])
    year = _year(cfg, pred["date"].dt.year.unique(), imgset.years)
    pred = pred[pred["date"].dt.year == year].dropna(subset=["p_up"]).reset_index(drop=True)
    if len(pred) < 2:
        raise InputError(f"{pred_path}: fewer than 2 predictions in {year}")
    rng = np.random.default_rng(it.seed)
    take = np.sort(rng.choice(len(pred), size=min(it.n_images, len(pred)), replace=False))
    sample = pred.iloc[take].reset_index(drop=True)
    labels = imgset.labels(year, columns=["stock_id", "date"])
    rows = locate_rows(labels, sample, where=str(imgset.directory / f"labels_{year}.parquet"))
    order = np.argsort(rows, kind="stable")  # read the memory map in file order
    sample, rows = sample.iloc[order].reset_index(drop=True), rows[order]
    images = np.asarray(imgset.images(year)[rows])
    n = len(images)

    members = member_indices(run)
    if it.members == "first":
        members = members[:1]
    ens = load_ensemble(run, members)
    chart = ens.chart
    window, has_volume, has_ma = int(chart["window"]), bool(chart["volume"]), bool(chart["ma"])
    mean, std = norm_for_year(ens.norm, year)
    device = resolve_device(cfg.train.device)
    if device.type == "cpu":
        set_threads(cfg.train)
    score = EnsembleScore(ens.members, ens.calibrations, float(mean), float(std)).to(device)
    bs = it.batch_size
    sample["p_up_explained"] = predict_p_up(score, images, bs)
    # Same members, same calibration: the stage's own P(up) agrees with predict's up to precision.
    p_gap = float(np.abs(sample["p_up_explained"] - sample["p_up"]).max()) if len(members) == len(
        member_indices(run)) else None
    h, w3, p_rows, _ = layout(window, has_volume)
    summary: dict = {"run": run.name, "year": year, "members": members, "n_images": n,
                     "image_hw": [h, w3], "p_up_max_abs_diff_vs_predictions": p_gap,
                     "source": cfg.panel.source, "methods": list(it.methods)}
    log.info("interpret: run %s, year %d, %d images, members %s", run.name, year, n, members)

    # ---- the chart's planted-signal regions (and the features, from the panel)
    feats = None
    ma_masks = None
    try:
        blocks, n_hist, feats = panel_blocks(paths.panel_dir(cfg), sample, window, year)
        if has_ma:
            ma_masks = regions.ma_line_masks(blocks, n_hist, window, has_volume, check_images=images)
    except (InputError, FileNotFoundError, ValueError) as e:
        log.warning("interpret: no planted features / MA-line masks (%s); measured without them", e)
        summary["regions_warning"] = str(e)
    if feats is not None:
        sample = pd.concat([sample, feats], axis=1)
    region_masks: dict[str, np.ndarray] = {
        f"last_{it.last_days}_days": regions.last_days_mask(window, it.last_days, has_volume),
        "last_day": regions.last_days_mask(window, 1, has_volume),
    }
    if has_volume:
        region_masks["volume_area"] = regions.volume_mask(window, None, has_volume)
        region_masks[f"volume_last_{it.last_days}_days"] = regions.volume_mask(window, it.last_days,
                                                                               has_volume)
    if ma_masks is not None:
        region_masks["ma_line"] = ma_masks
    region_masks["ink"] = images > 0

    def side_examples() -> np.ndarray:
        o = np.argsort(sample["p_up_explained"].to_numpy(), kind="stable")
        k = min(3, n // 2)
        return np.r_[o[::-1][:k], o[:k]]

    ex = side_examples()
    ex_titles = [f"P(up)={p:.3f}" for p in sample["p_up_explained"].to_numpy()[ex]]
    v = to_pixels(images, device)

    # ---- filters
    log.info("interpret: filters (%.0f s so far)", time.perf_counter() - t0)
    if "filters" in it.methods:
        f = filters.first_layer_filters(ens.members[0])
        ax = figures.filters_ax(f, title=f"{run.name} member {members[0]} first-layer filters")
        write_figure(out / "filters.png", ax.figure)
        with atomic_path(out / "filters.npz") as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(fh, filters=f)
        summary["filters"] = {"n": int(f.shape[0]), "kernel": list(f.shape[1:]),
                              "mean_abs_weight": float(np.abs(f).mean())}

    # ---- saliency and occlusion maps
    log.info("interpret: saliency and occlusion maps (%.0f s so far)", time.perf_counter() - t0)
    maps: dict[str, np.ndarray] = {}
    if "saliency" in it.methods:
        maps["input_gradient"] = saliency.input_gradient(score, v, bs)
        maps["guided_backprop"] = saliency.guided_backprop(score, v, bs)
    if "occlusion" in it.methods:
        m_occ = min(n, it.occlusion_images)
        occ_map = np.full((n, h, w3), np.nan)
        occ_map[:m_occ] = occlusion.occlusion_map(score, images[:m_occ], tuple(it.occlusion_patch), bs)
        # The figure's examples get their map too; the measures use the first m_occ (a plain
        # random sample) only.
        extra = ex[ex >= m_occ]
        if extra.size:
            occ_map[extra] = occlusion.occlusion_map(score, images[extra], tuple(it.occlusion_patch), bs)
        maps["occlusion"] = occ_map
        day_p = occlusion.occlusion_effects(score, images[:m_occ],
                                            occlusion.day_masks(window, h, p_rows, "price"), bs)
        parts = [("price", day_p)]
        if has_volume:
            parts.append(("volume", occlusion.occlusion_effects(
                score, images[:m_occ], occlusion.day_masks(window, h, p_rows, "volume"), bs)))
        days = pd.concat([pd.DataFrame({"stock_id": np.repeat(sample["stock_id"].to_numpy()[:m_occ], window),
                                        "date": np.repeat(sample["date"].to_numpy()[:m_occ], window),
                                        "part": part, "day": np.tile(np.arange(1, window + 1), m_occ),
                                        "effect": e.ravel()}) for part, e in parts], ignore_index=True)
        write_parquet(out / "occlusion_days.parquet", days)
        named = {k: m for k, m in region_masks.items() if k != "ink"}
        reg_rows = []
        for name, m in named.items():
            mm = m[:m_occ, None] if m.ndim == 3 else m[None]
            e = occlusion.occlusion_effects(score, images[:m_occ], mm, bs)[:, 0]
            reg_rows.append(pd.DataFrame({"stock_id": sample["stock_id"].to_numpy()[:m_occ],
                                          "date": sample["date"].to_numpy()[:m_occ], "region": name,
                                          "effect": e}))
        regs = pd.concat(reg_rows, ignore_index=True)
        write_parquet(out / "occlusion_regions.parquet", regs)
        fig, axes = figures.grid(1, 1, cell=(6.0, 3.2))
        for i, (part, e) in enumerate(parts):
            figures.day_effect_ax(e, axes[0, 0], label=f"blank the {part} {'glyph' if part == 'price' else 'bar'}",
                                  color=figures.PALETTE[i])
        write_figure(out / "occlusion.png", fig)
        summary["occlusion"] = {
            "n_images": int(m_occ), "patch": list(it.occlusion_patch),
            "mean_abs_effect_by_day": {p: np.abs(e).mean(axis=0).round(5).tolist() for p, e in parts},
            "mean_abs_effect_by_region": regs.assign(a=regs["effect"].abs()).groupby("region")["a"]
            .mean().round(5).to_dict()}
    if maps:
        with atomic_path(out / "maps.npz") as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(fh, images=images, **{k: m.astype(np.float32) for k, m in maps.items()})
        shown = [(k.replace("_", " "), m[ex], True) for k, m in maps.items()]
        write_figure(out / "saliency.png", figures.maps_figure(
            images[ex], shown, ex_titles, title=f"{run.name}: saliency of sampled images from {year}"))
        fig, axes = figures.grid(1, 1 + len(maps), cell=(2.0, 2.2),
                                 title=f"mean over {n} images from {year}")
        figures.image_ax(images.mean(axis=0), axes[0, 0], "mean image")
        for j, (k, m) in enumerate(maps.items(), start=1):
            figures.map_ax(np.nanmean(np.abs(m), axis=0), axes[0, j], f"mean |{k}|", signed=False)
        write_figure(out / "average_maps.png", fig)

    # ---- the planted-signal measure
    log.info("interpret: the planted-signal measure (%.0f s so far)", time.perf_counter() - t0)
    if maps:
        subsets = {"all": np.ones(n, bool)}
        if feats is not None:
            s = sample["surge_dir"].abs().to_numpy()
            r = sample["rev"].abs().to_numpy()
            t = sample["trend"].abs().to_numpy()
            for name, x in (("surge_days", s), ("strong_reversal", r), ("strong_trend", t)):
                ok = np.isfinite(x)
                if ok.any():
                    subsets[name] = ok & (x >= np.nanquantile(x, it.surge_quantile))
                    subsets[f"not_{name}"] = ok & ~subsets[name]
        abs_maps = {k: np.abs(np.nan_to_num(m)) for k, m in maps.items()}
        table = regions.planted_signal_table(
            {k: a for k, a in abs_maps.items() if k != "occlusion"}, region_masks, subsets)
        if "occlusion" in abs_maps:
            m_occ = min(n, it.occlusion_images)
            occ_tab = regions.planted_signal_table(
                {"occlusion": abs_maps["occlusion"][:m_occ]},
                {k: (r[:m_occ] if r.ndim == 3 else r) for k, r in region_masks.items()},
                {k: keep[:m_occ] for k, keep in subsets.items()})
            table = pd.concat([table, occ_tab], ignore_index=True)
        with atomic_path(out / "planted_signal.csv") as tmp:
            table.to_csv(tmp, index=False)
        fig, axes = figures.grid(1, 2 if "surge_days" in subsets else 1, cell=(6.0, 3.2))
        figures.concentration_ax(table, "all", axes[0, 0])
        if "surge_days" in subsets:
            figures.concentration_ax(table, "surge_days", axes[0, 1])
        write_figure(out / "planted_signal.png", fig)
        key = table.set_index(["method", "region", "subset"])["mean"]
        summary["planted_signal"] = {
            "definition": "mean over images of (share of |map| in the region) / (region's share of "
                          "the image area); 1 = spread evenly, > 1 = concentrated there",
            "planted": cfg.panel.source == "synthetic",
            "ratios": {f"{m}|{r}|{s}": (None if pd.isna(x) else round(float(x), 4))
                       for (m, r, s), x in key.items()},
        }

    # ---- embedding
    log.info("interpret: embedding (%.0f s so far)", time.perf_counter() - t0)
    if "embedding" in it.methods:
        feats_pen = embedding.penultimate_features(score, images, 0, bs)
        scores_pc, ratio = embedding.pca(feats_pen, 10)
        perp = min(it.tsne_perplexity, n - 1)
        ts = embedding.tsne(feats_pen, perp, it.seed)
        emb = pd.DataFrame({"stock_id": sample["stock_id"], "date": sample["date"],
                            "p_up": sample["p_up_explained"], "ret": sample[ret_col],
                            "pc1": scores_pc[:, 0], "pc2": scores_pc[:, 1] if scores_pc.shape[1] > 1 else 0.0,
                            "tsne1": ts[:, 0], "tsne2": ts[:, 1]})
        write_parquet(out / "embedding.parquet", emb)
        fig, axes = figures.grid(2, 3, cell=(3.6, 3.0), title=f"{run.name}: penultimate features, "
                                 f"{n} images from {year}")
        for r, (xy_cols, name) in enumerate(((["pc1", "pc2"], "PCA"), (["tsne1", "tsne2"], "t-SNE"))):
            xy = emb[xy_cols].to_numpy()
            figures.embedding_ax(xy, emb["p_up"], axes[r, 0], f"{name}: P(up)", "P(up)", 0.5)
            figures.embedding_ax(xy, emb["ret"].clip(-0.5, 0.5), axes[r, 1], f"{name}: realised return",
                                 "return", 0.0)
        figures.explained_variance_ax(ratio, axes[0, 2])
        axes[1, 2].set_axis_off()
        write_figure(out / "embedding.png", fig)

        def corr(a: pd.Series, b: pd.Series) -> float | None:
            ok = a.notna() & b.notna()
            return float(np.corrcoef(a[ok], b[ok])[0, 1]) if ok.sum() > 2 and a[ok].std() > 0 else None
        summary["embedding"] = {"dim": int(feats_pen.shape[1]),
                                "explained_variance_ratio": ratio.round(5).tolist(),
                                "corr_pc1_p_up": corr(emb["pc1"], emb["p_up"]),
                                "corr_pc1_ret": corr(emb["pc1"], emb["ret"]),
                                "tsne_perplexity": perp}

    # ---- class-model images
    log.info("interpret: class-model images (%.0f s so far)", time.perf_counter() - t0)
    if "class_model" in it.methods:
        cm, cm_p, trace = class_model.class_model_images(
            score, (h, w3), it.class_model_steps, it.class_model_lr, it.class_model_l2,
            it.class_model_tv, it.seed)
        with atomic_path(out / "class_model.npz") as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(fh, images=cm.astype(np.float32), p_up=cm_p, objective=trace,
                                classes=np.array(["up", "down"]))
        fig, axes = figures.grid(1, 3, cell=(2.4, 2.4), title="class-model images")
        top = max(float(cm.max()), 1.0)  # the regularised images are faint: scale to their peak
        figures.image_ax(cm[0], axes[0, 0], f'"up": P(up)={cm_p[0]:.3f} (white = {top:.0f})', vmax=top)
        figures.image_ax(cm[1], axes[0, 1], f'"down": P(up)={cm_p[1]:.3f}', vmax=top)
        figures.map_ax(cm[0] - cm[1], axes[0, 2], '"up" minus "down"', signed=True)
        write_figure(out / "class_model.png", fig)
        regs_cm = {k: m for k, m in region_masks.items() if m.ndim == 2}
        summary["class_model"] = {
            "p_up": {"up": float(cm_p[0]), "down": float(cm_p[1])},
            "mean_pixel": {"up": float(cm[0].mean()), "down": float(cm[1].mean())},
            "concentration_of_up_minus_down": {
                k: float(regions.concentration(np.abs(cm[0] - cm[1])[None], m)[0]) for k, m in regs_cm.items()}}

    # ---- robustness
    log.info("interpret: robustness (%.0f s so far)", time.perf_counter() - t0)
    if "robustness" in it.methods:
        m_rb = min(n, it.robustness_images)
        fl = robustness.fgsm_flip_points(score, v[:m_rb], it.epsilons, it.bisect_steps, bs)
        pg = robustness.pgd_flips(score, v[:m_rb], it.epsilons, it.pgd_steps, bs)
        fgsm_flips = fl[[c for c in fl.columns if c.startswith("flip_")]].to_numpy()
        curve = pd.concat([robustness.flip_curve(fgsm_flips, it.epsilons, "FGSM"),
                           robustness.flip_curve(pg, it.epsilons, f"PGD ({it.pgd_steps} steps)")],
                          ignore_index=True)
        with atomic_path(out / "flip_curve.csv") as tmp:
            curve.to_csv(tmp, index=False)
        for c in ("fgsm_eps", "fgsm_eps_below"):
            sample[c] = np.r_[fl[c].to_numpy(), np.full(n - m_rb, np.nan)]
        sample["pgd_eps"] = np.r_[robustness.min_grid_eps(pg, it.epsilons), np.full(n - m_rb, np.nan)]
        fig, axes = figures.grid(1, 2, cell=(4.5, 3.2))
        figures.flip_curve_ax(curve, axes[0, 0])
        e = fl["fgsm_eps"].dropna()
        axes[0, 1].hist(e, bins=np.geomspace(min(it.epsilons) / 2, 256, 20), color=figures.PALETTE[0])
        axes[0, 1].set_xscale("log", base=2)
        axes[0, 1].set_xlabel("FGSM flip point eps (of 255)")
        axes[0, 1].set_ylabel("images")
        axes[0, 1].set_title(f"{len(e)} of {m_rb} flipped within eps <= {max(it.epsilons):g}")
        write_figure(out / "robustness.png", fig)
        summary["robustness"] = {
            "n_images": int(m_rb), "epsilons": list(it.epsilons),
            "fgsm_median_flip_eps": None if e.empty else float(e.median()),
            "fgsm_share_flipped": dict(zip(map(str, it.epsilons), fgsm_flips.mean(axis=0).round(4).tolist())),
            "pgd_share_flipped": dict(zip(map(str, it.epsilons), pg.mean(axis=0).round(4).tolist()))}

    write_parquet(out / "sample.parquet", sample)
    write_json(out / "summary.json", summary)
    save_resolved(cfg, out)
    mark_done(out, settings, year=year, members=members, n_images=n, predictions=stamp)
    return out


def run_interpret(cfg) -> Path:  # noqa: ANN001
    """The interpretation stage (see the module docstring): one writer per output folder,
    temporaries of a killed run removed, predictions older than the trained run refused."""
    from pipeline import paths
    from pipeline.io import folder_lock, remove_stale_temps

    out = paths.interpret_dir(cfg)
    with folder_lock(out, "interpret"):
        if k := remove_stale_temps(out):
            log.info("removed %d temporary file(s) left in %s by an interrupted run", k, out)
        return _run_interpret(cfg)


def interpret_outputs(cfg) -> tuple[list[tuple[Path, str]], dict[str, pd.DataFrame]]:  # noqa: ANN001
    """What a report embeds from a finished interpret stage.

    Returns ([(figure path, caption)] for every figure present, in reading order, and
    {table file name: DataFrame} for every table present, plus "summary" (summary.json flattened
    to one row per key). A folder without a completion marker raises StaleInputError naming
    `make interpret`.
    """
    from pipeline import paths
    from pipeline.io import StaleInputError, marker_path, read_json

    out = paths.interpret_dir(cfg)
    if not marker_path(out).exists():
        raise StaleInputError(f"{out} has no finished interpretation: run `make interpret`")
    summary = read_json(out / "summary.json")
    figs = []
    for name, caption in FIGURES.items():
        p = out / name
        if p.exists():
            c = summary.get("filters", {}).get("n", "")
            figs.append((p, caption.format(c=c)))
    tables: dict[str, pd.DataFrame] = {}
    for name in TABLES:
        p = out / name
        if p.exists():
            tables[name] = pd.read_parquet(p) if p.suffix == ".parquet" else pd.read_csv(p)
    tables["summary"] = pd.json_normalize(summary, sep=".").T.rename(columns={0: "value"})
    return figs, tables
