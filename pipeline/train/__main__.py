"""``python -m pipeline.train --config X`` (make train); also under ``torchrun --nproc_per_node=N``."""

from __future__ import annotations

from pipeline.cli import model_option, run_stage


def _body(cfg, args) -> None:  # noqa: ANN001
    if cfg.transfer.mode != "none":  # a transferred run: copy or re-fit the source's, no training
        from pipeline.config import ConfigError
        from pipeline.train.transfer import transfer_run

        if args.model:
            raise ConfigError(f"--model {args.model} with transfer.mode {cfg.transfer.mode}: the "
                              "model is the source run's")
        transfer_run(cfg)
        return
    from pipeline.train.loop import train_run

    train_run(cfg)


if __name__ == "__main__":
    run_stage("Train the CNN ensemble on the in-sample images.", _body, extra=model_option)
