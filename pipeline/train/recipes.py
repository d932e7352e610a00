"""Named training recipes: small sets of ``train`` settings over the paper's defaults.

    RECIPES["paper"]        the paper's recipe unchanged (Adam lr 1e-5, Xavier head; METHOD 6)
    RECIPES["fast"]         lr 1e-4 and the output layer started at the base rate
    apply_recipe(cfg, name) -> a copy of cfg with the recipe's train settings

Calibration (``train.calibration``) is not part of a recipe: it is fitted after training on the
validation split, so one trained run yields both the raw and the calibrated predictions (the
recovery study reports both). Why "fast" exists: with tens of thousands rather than the paper's
~490,000 training images, lr 1e-5 stops early while the Xavier head's large initial logits are
still being unlearned; a 10x rate and a head that starts at the base rate spend the few epochs
on the chart features instead. Which recipe a shipped config uses is chosen on validation loss
only (docs/recovery.md).
"""

from __future__ import annotations


from pipeline.config import Config, ConfigError, derive
RECIPES: dict[str, dict] = {
    "paper": {},
    "fast": {"lr": 1e-4, "head_init": "base_rate"},
    "lr1e-4": {"lr": 1e-4},
    "base_rate": {"head_init": "base_rate"},
}


def apply_recipe(cfg: Config, name: str) -> Config:
    """A deep copy of ``cfg`` with recipe ``name``'s train settings applied."""
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}; choose one of {sorted(RECIPES)}")
    return derive(cfg, {f"train.{k}": v for k, v in RECIPES[name].items()})
