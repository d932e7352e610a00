"""``python -m pipeline.score --config X`` (``make score``): P(up) per stock at the panel's latest
date (or ``--date``) with the experiment's trained run, for all stocks or ``--tickers``, with the
chart and Grad-CAM of ``--charts`` (default: the 5 highest and 5 lowest). The panel is the
experiment's own unless ``--panel DIR`` (another canonical panel folder) or ``--source``/``--path``
(raw files of any adapter, e.g. newer Stooq files) is given. A regression run scores its predicted
return (column ``pred_return`` or ``pred_vol_adjusted_return``) instead of P(up)."""

from __future__ import annotations

import argparse

from pipeline.cli import run_stage
from pipeline.config import Config
from pipeline.score.core import score_run


def _list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _extra(p: argparse.ArgumentParser) -> None:
    p.add_argument("--date", default=None, help="score at the last trading day on or before this date")
    p.add_argument("--tickers", type=_list, default=None, help="comma-separated tickers to score")
    p.add_argument("--charts", type=_list, default=None, help="comma-separated tickers to draw")
    p.add_argument("--panel", default=None, help="a canonical panel folder to score from")
    p.add_argument("--source", default=None, help="raw source adapter (stooq, crsp, yahoo, generic, synthetic)")
    p.add_argument("--path", default=None, help="raw files of --source")


def _body(cfg: Config, args: argparse.Namespace) -> None:
    out = score_run(cfg, args.date, args.tickers, args.charts, panel_dir=args.panel,
                    source=args.source, path=args.path)
    print(f"scores in {out}")


if __name__ == "__main__":
    run_stage("Score new data with a trained run", _body, extra=_extra)
