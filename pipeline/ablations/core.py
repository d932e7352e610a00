"""Table-18 ablations (docs/method.md section 9): train, predict and evaluate each variant, then tabulate.

Every variant changes only the model (a registry name); data, split, seeds, training settings and the
ensemble size (``ablations.ensemble``, default the baseline's ``train.ensemble``) are shared.

Where the runs live: the ablation experiment is the parent experiment relocated to
``data/<name>/ablations/`` (``data_dir = data/<name>``, ``name = ablations``) whose ``inputs_dir``
is the parent's inputs folder, so it reads the parent's ``panel/`` and ``images/``. So every stage
function resolves its paths unchanged (``paths.run_dir`` -> ``data/<name>/ablations/runs/<variant>_R20``,
``paths.images_dir`` -> ``data/<name>/images/I20_month``), the variant runs never touch the main
experiment's runs (the baseline is retrained here with the ablation's ensemble size, so all rows
share identical settings), and each variant is resumable because the train, predict and evaluate
stage functions are. Benchmark strategies are not evaluated for the variants
(Table 18 needs none of them; ``evaluate.benchmarks`` is emptied in the ablation config).
"""

from __future__ import annotations

import logging
import traceback
from pathlib import Path

from pipeline import paths
from pipeline.config import Config, ConfigError, check_ablations, derive, save_resolved, split_years
from pipeline.io import read_json

log = logging.getLogger(__name__)

def ablation_models(cfg: Config) -> list[str]:
    """The variants to run: ``ablations.variants``, or every Table-18 row of the registry.

    Unknown names are a ConfigError naming them and the valid names; duplicates are dropped
    (first occurrence kept).
    """
    from pipeline.models.registry import TABLE18, list_models

    names = [r.model for r in TABLE18] if cfg.ablations.variants is None else cfg.ablations.variants
    known = set(list_models())
    bad = [n for n in names if n not in known]
    if bad:
        raise ConfigError(f"'ablations.variants' has unknown model(s) {bad}; registered: {list_models()}")
    if not names:
        raise ConfigError("'ablations.variants' is empty; leave it unset for every Table-18 variant")
    return list(dict.fromkeys(names))


def ablation_config(cfg: Config) -> Config:
    """The ablation experiment's config: relocated to ``paths.ablations_dir(cfg)``, reading the
    parent's panel and images (``inputs_dir``), ensemble size
    ``ablations.ensemble`` (or ``train.ensemble``), in-sample pool ``ablations.max_train_images`` (or
    ``train.max_train_images``), test years ``ablations.test_years`` (or the
    split's), no benchmark strategies. ``cfg`` is not changed."""
    check_ablations(cfg)  # checked at load too; again here for a config changed since
    d = paths.ablations_dir(cfg)
    changes: dict = {"data_dir": str(d.parent), "name": d.name,
                     "inputs_dir": str(cfg.inputs_root),  # the parent's panel and images, shared, not copied
                     "evaluate.benchmarks": []}
    if cfg.ablations.ensemble is not None:
        changes["train.ensemble"] = cfg.ablations.ensemble
    if cfg.ablations.test_years is not None:
        # The same in-sample years, so the same training pool; only the predicted years shrink.
        changes.update({"train.split": "custom", "train.insample_years": list(split_years(cfg.train)[0]),
                        "train.test_years": list(cfg.ablations.test_years)})
    if cfg.ablations.max_train_images is not None:
        changes["train.max_train_images"] = cfg.ablations.max_train_images
    a = derive(cfg, changes)
    assert a.experiment_dir == d
    return a


def execution_order(models: list[str]) -> list[str]:
    """``models`` sorted by forward multiply-accumulates per image, cheapest first (stable)."""
    from pipeline.models.cnn import macs_per_image
    from pipeline.models.registry import model_spec

    return sorted(models, key=lambda m: macs_per_image(model_spec(m)))


def variant_config(acfg: Config, model: str) -> Config:
    """``acfg`` (the ablation config) training ``model`` instead of the baseline."""
    return derive(acfg, {"train.model": model})


def run_variant(vcfg: Config, threads: int | None = None) -> dict[str, float]:
    """Train, predict and evaluate one variant (each stage resumable); return its Table-18 metrics.

    ``threads``: torch intra-op threads when ``train.threads`` is unset (parallel variants share the
    cores); threads do not enter the training settings hash, so finished members are still reused.
    """
    from pipeline.evaluate.core import evaluate_run
    from pipeline.predict.core import predict_run
    from pipeline.train.loop import train_run

    if threads is not None and vcfg.train.threads is None:
        vcfg = derive(vcfg, {"train.threads": threads})
    model = vcfg.train.model
    log.info("ablation %s: train", model)
    train_run(vcfg)
    log.info("ablation %s: predict", model)
    predict_run(vcfg)
    log.info("ablation %s: evaluate", model)
    evaluate_run(vcfg)
    return read_variant_metrics(vcfg)


def read_variant_metrics(vcfg: Config) -> dict[str, float]:
    """Table-18 metrics of a finished variant from its run summary.json and eval metrics.json."""
    from pipeline.ablations.table import variant_metrics

    run, ev = paths.run_dir(vcfg), paths.eval_dir(vcfg)
    for p in (run / "summary.json", ev / "metrics.json"):
        if not p.exists():
            raise FileNotFoundError(f"{p} not found: variant {vcfg.train.model} is not finished")
    return variant_metrics(read_json(run / "summary.json"), read_json(ev / "metrics.json"),
                           where=vcfg.train.model)


def _write_table(cfg: Config, acfg: Config, models: list[str], results: dict[str, dict[str, float]],
                 failed: dict[str, str]) -> None:
    """table18.{csv,md,tex} in the ablations folder, with the settings that differ from the paper's."""
    from pipeline.ablations.table import PAPER_ENSEMBLE, write_table18

    extra = [f"Data: experiment '{cfg.name}' (panel source {cfg.panel.source}), split "
             f"{cfg.train.split}, image set {cfg.train.image_set}, horizon R{cfg.train.horizon}."]
    if cfg.train.split != "ssrn":
        extra.append("The paper's numbers are for the SSRN split (test 2000-2019).")
    if cfg.ablations.test_years is not None:
        first, last = split_years(acfg.train)[1]
        extra.append(f"T columns, correlations and Sharpe ratios on test years {first}-{last} only "
                     f"(ablations.test_years; the baseline's test period is "
                     f"{'-'.join(map(str, split_years(cfg.train)[1]))}).")
    if cfg.ablations.max_train_images is not None:
        extra.append(f"Every variant trained on an in-sample pool of {acfg.train.max_train_images:,} "
                     "images (ablations.max_train_images; the baseline row is retrained with it).")
    if acfg.train.ensemble != PAPER_ENSEMBLE and not results:
        extra.append(f"Configured ensemble size {acfg.train.ensemble} (paper: {PAPER_ENSEMBLE}).")
    if failed:
        extra.append(f"Failed (see the stage log): {', '.join(m for m in models if m in failed)}.")
    write_table18(paths.ablations_dir(cfg), {m: results[m] for m in models if m in results},
                  extra_notes=extra)
    log.info("ablations: table18.{csv,md,tex} in %s", paths.ablations_dir(cfg))


def write_finished_table(cfg: Config) -> Path:
    """Write table18.{csv,md,tex} from the variants already finished, running nothing (progress of
    a long ablation run; the variants not finished yet are listed as not run). Returns the folder."""
    models = ablation_models(cfg)
    acfg = ablation_config(cfg)
    results = {}
    for m in models:
        try:
            results[m] = read_variant_metrics(variant_config(acfg, m))
        except FileNotFoundError:
            continue
    log.info("ablations: %d of %d variant(s) finished", len(results), len(models))
    _write_table(cfg, acfg, models, results, {})
    return paths.ablations_dir(cfg)


def run_ablations(cfg: Config) -> Path:
    """Run every variant (``ablations.parallel`` processes), then write table18.{csv,md,tex}.

    Variants that fail are logged with their traceback; the table is still written with the
    variants that finished (the others shown as not run) and then a RuntimeError names the failures.
    Returns the ablations directory.
    """
    models = ablation_models(cfg)
    acfg = ablation_config(cfg)
    out = paths.ablations_dir(cfg)
    save_resolved(acfg, out)
    parallel = max(1, int(cfg.ablations.parallel))
    log.info("ablations: %d variant(s), ensemble %d, %d in parallel, in %s", len(models),
             acfg.train.ensemble, parallel, out)
    results: dict[str, dict[str, float]] = {}
    failed: dict[str, str] = {}
    # Cheapest first (forward MACs per image), so a run cut short has finished the most rows; the
    # table keeps the paper's order whatever the order of execution.
    jobs = {m: variant_config(acfg, m) for m in execution_order(models)}
    if parallel == 1 or len(models) == 1:
        for m, v in jobs.items():
            try:
                results[m] = run_variant(v)
            except Exception:  # noqa: BLE001 - one failed variant must not lose the others
                failed[m] = traceback.format_exc()
                log.error("ablation %s failed:\n%s", m, failed[m])
    else:
        from pipeline.procs import run_jobs, threads_per_worker

        threads = threads_per_worker(parallel)
        done, errors = run_jobs(run_variant, {m: (v, threads) for m, v in jobs.items()}, parallel,
                                threads, desc="ablations")
        results.update(done)
        failed.update(errors)
    _write_table(cfg, acfg, models, results, failed)
    if failed:
        raise RuntimeError(f"{len(failed)} ablation variant(s) failed: {sorted(failed)} "
                           f"(tracebacks in the log above); table written without them")
    return out
