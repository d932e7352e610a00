"""The whole chain on the synthetic market: panel -> images -> train -> predict -> evaluate.

The synthetic market plants a known, chart-visible signal whose Bayes-optimal accuracy is computed
by the generator (docs/synthetic.md). A short training must learn it (clearly above chance), the
CNN's out-of-sample long-short portfolio must earn a clearly positive Sharpe ratio, and the
out-of-sample accuracy must never exceed the Bayes-optimal accuracy by more than sampling error: a
higher accuracy would mean the pipeline peeks at the future somewhere (a look-ahead check).

I5 images with the 5-record return are used because that pairing trains fastest on a CPU and its
label is exactly the horizon the Bayes accuracy is computed for.
"""

from __future__ import annotations

import math

import pytest

from pipeline import paths
from pipeline.config import load_config
from pipeline.evaluate.core import evaluate_run
from pipeline.images.build import build_image_set
from pipeline.images.executor import LocalExecutor
from pipeline.io import read_json
from pipeline.panel.build import make_panel
from pipeline.panel.synthetic import bayes_accuracy
from pipeline.predict.core import predict_run
from pipeline.train.loop import train_run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    cfg = load_config(None, [
        f"data_dir={root}", "name=e2e",
        "synthetic.n_stocks=150", "synthetic.end=1999-12-31",
        "synthetic.bayes_paths=128", "synthetic.bayes_samples=1000",
        "panel.source=synthetic",
        "images.sets=[I5/week]", "images.end_year=1999", "images.workers=1",
        "train.image_set=I5/week", "train.model=I5", "train.horizon=5", "train.label_return=records",
        "train.split=custom", "train.insample_years=[1993, 1996]", "train.test_years=[1997, 1999]",
        "train.ensemble=1", "train.epochs=4", "train.max_train_images=12000",
        # The paper's 1e-5 barely moves the weights in the few hundred steps a test can afford.
        "train.lr=1e-4",
        "evaluate.benchmarks=[STR, WSTR]",
    ])
    make_panel(cfg)
    with LocalExecutor(1) as ex:
        build_image_set(cfg, "I5/week", ex)
    run = train_run(cfg)
    predict_run(cfg)
    metrics = evaluate_run(cfg)
    return cfg, run, metrics


def test_training_learns_the_planted_signal(experiment):
    cfg, run, _ = experiment
    summary = read_json(run / "summary.json")
    # About 3,600 validation images: 0.54 is 4.8 standard errors above chance.
    assert summary["val_acc_mean"] > 0.54, summary


def test_out_of_sample_signal_is_clearly_profitable(experiment):
    _, _, m = experiment
    # About 16,000 test images: 0.53 is 7.6 standard errors above chance.
    assert m["accuracy"] > 0.53
    assert m["spearman"] > 0.05
    assert m["sharpe_ew"] > 1.0
    assert m["sharpe_vw"] > 0.5


def test_out_of_sample_accuracy_never_beats_the_bayes_bound(experiment):
    """Look-ahead check: accuracy <= Bayes accuracy + sampling error of both estimates."""
    cfg, _, m = experiment
    bayes = bayes_accuracy(cfg.synthetic, horizons=(5,)).set_index("horizon").loc[5]
    n = m["n"]
    acc_se = math.sqrt(m["accuracy"] * (1 - m["accuracy"]) / n)
    # Images of one date share the market shock, so the effective sample is smaller than n:
    # allow 4 standard errors of each estimate.
    bound = bayes["accuracy"] + 4 * math.hypot(bayes["stderr"], acc_se)
    assert m["accuracy"] <= bound, (m["accuracy"], bound)
    assert (paths.eval_dir(cfg) / "metrics.json").exists()
