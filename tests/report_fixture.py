"""A tiny synthetic experiment built by the real stage commands, for the report and notebook tests.

:func:`tiny_experiment` writes a small config into a temporary folder and runs the command line
``python -m pipeline.<stage> --config <it>`` (in-process, via runpy) for every stage in order (panel, images, train,
predict, evaluate, gradcam, ablations). A stage that fails fails every test that uses the
experiment, with the stage's error (never a silent "not run": the report's "not run" rendering is
tested on an empty experiment instead). The build happens once per test session (the result is
cached in this module, which pytest imports once).
"""

from __future__ import annotations

import contextlib
import io
import os
import runpy
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STAGES = ("panel", "images", "train", "predict", "evaluate", "gradcam", "ablations")

# About 40 stocks over 6 years: every stage runs in seconds on a shared 2-core machine. TREND
# needs 1,000 days of history, more than this market has, so it is left out.
TINY_YAML = """\
name: tiny
data_dir: {root}/data
reports_dir: {root}/reports
synthetic: {{n_stocks: 40, start: "1998-01-01", end: "2003-12-31", bayes_paths: 16, bayes_samples: 200}}
panel: {{source: synthetic, start: "1998-01-01", end: "2003-12-31"}}
images: {{sets: ["I20/month"], start_year: 1999, end_year: 2003, workers: 1, contact_sheet_samples: 12}}
train: {{split: custom, insample_years: [1999, 2000], test_years: [2001, 2003], ensemble: 2,
         epochs: 2, max_train_images: 600, batch_size: 64, device: cpu, threads: 1}}
evaluate: {{benchmarks: [MOM, STR, WSTR]}}
gradcam: {{n_per_side: 3, average_samples: 40}}
ablations: {{variants: ["I20-filters32"], ensemble: 1}}
"""


@dataclass
class TinyExperiment:
    root: Path
    config: Path
    ran: dict[str, bool] = field(default_factory=dict)
    why: dict[str, str] = field(default_factory=dict)  # stage -> reason it did not run
    seconds: dict[str, float] = field(default_factory=dict)

    def require(self, *stages: str) -> None:
        """Every stage ran (build raises otherwise): kept so a test states what it reads."""
        assert all(self.ran.get(s) for s in stages), stages


class StageFailed(RuntimeError):
    """A stage of the tiny experiment failed: the tests that use it fail with its error."""


def run_stage(stage: str, config: Path, cwd: Path) -> tuple[int, str]:
    """Run ``python -m pipeline.<stage> --config <config>`` in this process (the real command-line
    entry via runpy; one interpreter saves a torch import per stage). Returns (exit code, error)."""
    argv, old_cwd = sys.argv, os.getcwd()
    sys.argv = [f"pipeline.{stage}", "--config", str(config)]
    os.chdir(cwd)
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            runpy.run_module(f"pipeline.{stage}", run_name="__main__", alter_sys=False)
        return 0, ""
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
        return code, err.getvalue()
    finally:
        sys.argv = argv
        os.chdir(old_cwd)


def build(root: Path) -> TinyExperiment:
    root.mkdir(parents=True, exist_ok=True)
    cfg = root / "tiny.yaml"
    cfg.write_text(TINY_YAML.format(root=root.as_posix()))
    exp = TinyExperiment(root=root, config=cfg)
    for stage in STAGES:
        t0 = time.perf_counter()
        code, err = run_stage(stage, cfg, root)  # an exception propagates with its traceback
        exp.seconds[stage] = time.perf_counter() - t0
        if code != 0:
            raise StageFailed(f"stage {stage} of the tiny experiment exited {code}: {err.strip()}")
        exp.ran[stage] = True
    return exp


_CACHE: dict[str, TinyExperiment] = {}


def tiny_experiment(tmp_path_factory) -> TinyExperiment:
    """The session's tiny experiment (built on first use)."""
    if "tiny" not in _CACHE:
        _CACHE["tiny"] = build(tmp_path_factory.mktemp("report_tiny"))
    return _CACHE["tiny"]
