"""``python -m pipeline.panel --config X``: raw source -> canonical panel in data/<name>/panel/.

Resumable: skips when the panel folder is marked done with the same panel + synthetic settings;
``--force`` rebuilds anyway.
"""

from __future__ import annotations

import argparse

from pipeline.cli import run_stage
from pipeline.config import Config
from pipeline.panel.build import make_panel


def _extra(p: argparse.ArgumentParser) -> None:
    p.add_argument("--force", action="store_true", help="rebuild even if the panel is up to date")


def _body(cfg: Config, args: argparse.Namespace) -> None:
    make_panel(cfg, force=args.force)


def main(argv: list[str] | None = None) -> None:
    run_stage("Build the canonical daily price panel (docs/method.md section 4).", _body, argv, _extra)


if __name__ == "__main__":
    main()
