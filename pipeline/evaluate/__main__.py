"""``python -m pipeline.evaluate --config X [--model NAME]``: predictions + panel -> evaluation."""

from __future__ import annotations

import argparse

from pipeline.cli import model_option, run_stage
from pipeline.config import Config


def _body(cfg: Config, args: argparse.Namespace) -> None:
    from pipeline.evaluate.core import evaluate_run

    m = evaluate_run(cfg)
    def f(x: float | None, digits: int) -> str:  # None/NaN where a weighting was not evaluated
        return "n/a" if x is None or x != x else f"{x:.{digits}f}"

    print(f"{m['run']}: n={m['n']:,} accuracy={m['accuracy']:.4f} loss={f(m['loss'], 4)} "
          f"spearman={f(m['spearman'], 3)} sharpe_ew={f(m.get('sharpe_ew'), 2)} "
          f"sharpe_vw={f(m.get('sharpe_vw'), 2)}")


def main(argv: list[str] | None = None) -> None:
    run_stage("Evaluate out-of-sample predictions: metrics, decile portfolios, benchmarks, "
              "tables and figures.", _body, argv, extra=model_option)


if __name__ == "__main__":
    main()
