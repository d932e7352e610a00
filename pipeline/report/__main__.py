"""``python -m pipeline.report --config demo``: compose reports/<name>/report.html and report.pdf."""

from __future__ import annotations

import argparse

from pipeline.cli import run_stage
from pipeline.config import Config
from pipeline.report.render import write_report


def _extra(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-pdf", action="store_true", help="write only the HTML report")


def _body(cfg: Config, args: argparse.Namespace) -> None:
    res = write_report(cfg, config_ref=args.config or cfg.name, pdf=False if args.no_pdf else None)
    print(res.html)
    if res.pdf:
        print(res.pdf)


if __name__ == "__main__":
    run_stage("Compose the HTML and PDF report of an experiment from its artifacts.", _body,
              extra=_extra)
