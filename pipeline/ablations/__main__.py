"""``python -m pipeline.ablations --config X``: train/evaluate the Table-18 variants, write the table."""

from __future__ import annotations

import logging

from pipeline.ablations.core import run_ablations
from pipeline.cli import run_stage

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> None:
    def body(cfg, _args) -> None:
        out = run_ablations(cfg)
        log.info("Table 18 in %s", out)

    run_stage("Table-18 ablations: train, predict and evaluate each variant (METHOD.md section 9)",
              body, argv)


if __name__ == "__main__":
    main()
