"""``python -m pipeline.gradcam --config X``: Grad-CAM panel, maps and average maps of the run."""

from __future__ import annotations

import logging

from pipeline.cli import run_stage
from pipeline.gradcam.stage import run_gradcam

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> None:
    def body(cfg, _args) -> None:
        out = run_gradcam(cfg)
        log.info("gradcam artifacts in %s", out)

    run_stage("Grad-CAM maps and the Figure-12 panel of the run (docs/method.md section 8)", body, argv)


if __name__ == "__main__":
    main()
