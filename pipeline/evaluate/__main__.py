"""``python -m pipeline.evaluate --config X [--model NAME]``: predictions + panel -> evaluation."""

from __future__ import annotations

import argparse

from pipeline.cli import run_stage
from pipeline.config import Config


def _extra(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None,
                   help="evaluate the run of this registry model (default: train.model)")


def _body(cfg: Config, args: argparse.Namespace) -> None:
    from pipeline.evaluate.core import evaluate_run

    m = evaluate_run(cfg, args.model)
    print(f"{m['run']}: n={m['n']:,} accuracy={m['accuracy']:.4f} loss={m['loss']:.4f} "
          f"spearman={m['spearman']} sharpe_ew={m.get('sharpe_ew')} sharpe_vw={m.get('sharpe_vw')}")


def main(argv: list[str] | None = None) -> None:
    run_stage("Evaluate out-of-sample predictions: metrics, decile portfolios, benchmarks, "
              "tables and figures.", _body, argv, extra=_extra)


if __name__ == "__main__":
    main()
