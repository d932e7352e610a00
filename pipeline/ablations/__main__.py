"""``python -m pipeline.ablations --config X``: train/evaluate the Table-18 variants, write the table."""

from __future__ import annotations

import logging

from pipeline.ablations.core import run_ablations, write_finished_table
from pipeline.cli import run_stage

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> None:
    def body(cfg, args) -> None:
        out = write_finished_table(cfg) if args.table_only else run_ablations(cfg)
        log.info("Table 18 in %s", out)

    def extra(parser) -> None:
        parser.add_argument("--table-only", action="store_true",
                            help="write the table from the variants already finished; run nothing")

    run_stage("Table-18 ablations: train, predict and evaluate each variant (docs/method.md section 9)",
              body, argv, extra)


if __name__ == "__main__":
    main()
