"""``python -m pipeline.predict --config X`` (make predict)."""

from __future__ import annotations

from pipeline.cli import model_option, run_stage


def _body(cfg, args) -> None:  # noqa: ANN001
    from pipeline.predict.core import predict_run

    print(predict_run(cfg))


if __name__ == "__main__":
    run_stage("Predict P(up) for every out-of-sample image with the trained ensemble.", _body,
              extra=model_option)
