"""``python -m pipeline.images --config X`` (``make images``): build every configured image set.

For each ``images.sets`` entry: build it from ``paths.panel_dir(cfg)`` into
``paths.images_dir(cfg, set)`` (resumable; skipped when done with the same settings), write
``contact_sheet.png`` there and log the rejection counts.
"""

from __future__ import annotations

import argparse
import logging

from pipeline.cli import run_stage
from pipeline.config import Config
from pipeline.images.build import build_image_set
from pipeline.images.contact_sheet import update_contact_sheet
from pipeline.images.executor import make_executor
from pipeline.images.store import ImageSet

log = logging.getLogger("pipeline.images")


def build_images(cfg: Config) -> None:
    """Build every ``images.sets`` entry on one executor, each with its contact sheet."""
    executor = make_executor(cfg.images)
    try:
        for s in cfg.images.sets:
            out = build_image_set(cfg, s, executor)
            update_contact_sheet(out, cfg.images.contact_sheet_samples, title=f"{cfg.name} {s}")
            iset = ImageSet(out)
            totals: dict[str, int] = {}
            for counts in iset.rejections().values():
                for k, v in counts.items():
                    totals[k] = totals.get(k, 0) + v
            n = sum(iset.count(y) for y in iset.years)
            log.info("%s: %d images in %s; rejected %s", s, n, out, totals)
    finally:
        executor.close()


def _body(cfg: Config, _args: argparse.Namespace) -> None:
    build_images(cfg)


def main(argv: list[str] | None = None) -> None:
    run_stage("Render chart images and labels from the panel", _body, argv)


if __name__ == "__main__":
    main()
