"""``python -m pipeline.interpret --config X``: filters, saliency, occlusion, embeddings,
class-model images and adversarial robustness of the run (docs/method.md section 8.1)."""

from __future__ import annotations

import logging

from pipeline.cli import run_stage
from pipeline.interpret.core import run_interpret

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> None:
    def body(cfg, _args) -> None:
        out = run_interpret(cfg)
        log.info("interpret artifacts in %s", out)

    run_stage("Interpretation toolkit beyond Grad-CAM (docs/method.md section 8.1)", body, argv)


if __name__ == "__main__":
    main()
