"""The report's figure-level plots, under the names the report's first callers used.

Every plot lives in :mod:`pipeline.evaluate.plots` (one module, one style); this module only names
the multi-panel ones the notebooks and tests call as ``figures.*``. ``cumulative_hl`` here is the
per-weighting grid (a Figure), :func:`pipeline.evaluate.plots.cumulative_hl` the single axis.
"""

from __future__ import annotations

from pipeline.evaluate.plots import cumulative_hl_grid as cumulative_hl
from pipeline.evaluate.plots import training_curves, universe_plot

__all__ = ["cumulative_hl", "training_curves", "universe_plot"]
