"""Gradcam and interpret redo their work exactly when the run's predictions change: both put the
predictions' input stamp (pipeline.io.input_stamp: size and SHA-256 of the bytes) into their
settings hash, so a rerun on the same predictions skips, even when the file was touched or written
again with the same content, and a re-predicted run with other P(up) values redoes both."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.mark.slow
def test_gradcam_and_interpret_redo_exactly_when_the_predictions_change(tmp_path) -> None:
    from interp_experiment import make_tiny_experiment

    from pipeline.gradcam.stage import run_gradcam
    from pipeline.interpret.core import run_interpret
    from pipeline.io import input_stamp, marker_path, read_json
    from pipeline.predict.core import predict_run
    from pipeline.train.loop import train_run

    cfg = make_tiny_experiment(tmp_path, overrides=[
        "interpret.methods=[filters]", "interpret.n_images=16", "train.threads=1"])
    run = train_run(cfg)
    pred_path = predict_run(cfg)
    g_out, i_out = run_gradcam(cfg), run_interpret(cfg)
    g_marker, i_marker = marker_path(g_out), marker_path(i_out)

    def state() -> dict:
        """What each stage last wrote: its marker (hash, stamp) and an output's modification time."""
        return {"gradcam": (read_json(g_marker), (g_out / "panel.png").stat().st_mtime_ns),
                "interpret": (read_json(i_marker), (i_out / "summary.json").stat().st_mtime_ns)}

    def rerun() -> None:
        run_gradcam(cfg)
        run_interpret(cfg)

    first = state()
    stamp = input_stamp(pred_path)
    assert first["gradcam"][0]["predictions"] == stamp == first["interpret"][0]["predictions"]

    # Unchanged inputs: both skip.
    rerun()
    assert state() == first
    # Touched (a copy, a restore): the same content, so still current.
    st = pred_path.stat()
    os.utime(pred_path, ns=(st.st_atime_ns, st.st_mtime_ns + 5 * 10**9))
    rerun()
    assert state() == first
    # Predict again from its finished parts: a new file with the same bytes, still current.
    marker_path(run, "_PREDICT_DONE").unlink()
    predict_run(cfg)
    assert input_stamp(pred_path) == stamp
    rerun()
    assert state() == first

    # Re-predicted in bf16 (the same trained run, other P(up) values): both redo.
    cfg.train.precision = "bf16"
    predict_run(cfg)
    new_stamp = input_stamp(pred_path)
    assert new_stamp != stamp
    rerun()
    again = state()
    for stage in ("gradcam", "interpret"):
        marker, mtime = again[stage]
        assert marker["predictions"] == new_stamp and marker["hash"] != first[stage][0]["hash"], stage
        assert mtime > first[stage][1], stage
    # ... and what they wrote comes from the new predictions.
    pred = pd.read_parquet(pred_path)
    year = pred[pd.to_datetime(pred["date"]).dt.year == 2002]
    sel = pd.read_parquet(g_out / "selection.parquet")
    np.testing.assert_array_equal(sel["p_up"][:3].to_numpy(), np.sort(year["p_up"].to_numpy())[::-1][:3])
    sample = pd.read_parquet(i_out / "sample.parquet")
    keyed = year.set_index(["stock_id", pd.to_datetime(year["date"])])["p_up"]
    np.testing.assert_array_equal(
        sample["p_up"].to_numpy(),
        keyed.loc[list(zip(sample["stock_id"], pd.to_datetime(sample["date"])))].to_numpy())
