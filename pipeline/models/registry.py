"""Model registry (timm-style): every model the pipeline can train, by name.

    create_model("I20")            -> the paper's I20 baseline ChartCNN
    create_model("I20-nobn")       -> a Table-18 variant (docs/method.md section 9)
    list_models()                  -> all registered names
    TABLE18                        -> the Table-18 rows in the paper's order, first the baseline

Names: "I5", "I20", "I60", and I20 variants "I20-filters32", "I20-filters128", "I20-layers2",
"I20-layers4", "I20-dropout0.00", "I20-dropout0.25", "I20-dropout0.75", "I20-nobn", "I20-noxavier",
"I20-relu", "I20-pool2x2", "I20-kernel3x3", "I20-kernel7x3", "I20-dil21-str11", "I20-dil11-str31",
"I20-dil11-str11" (dilXY-strXY = first-layer dilation / stride).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

from pipeline.errors import InputError
from pipeline.models.cnn import ChartCNN, ModelSpec

_REGISTRY: dict[str, Callable[[], ModelSpec]] = {}


class UnknownModelError(KeyError, InputError):
    """A model name that is not registered (a ValueError too, so stage CLIs report it in one line)."""

    def __str__(self) -> str:
        return str(self.args[0])


def register(name: str) -> Callable[[Callable[[], ModelSpec]], Callable[[], ModelSpec]]:
    """Decorator: register a zero-argument function returning the ModelSpec of ``name``."""

    def deco(fn: Callable[[], ModelSpec]) -> Callable[[], ModelSpec]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = fn
        return fn

    return deco


def list_models() -> list[str]:
    """Registered model names, in registration order (baselines first, then Table 18)."""
    return list(_REGISTRY)


def model_spec(name: str, **overrides) -> ModelSpec:
    """The ModelSpec registered under ``name``, with ``overrides`` of its fields (e.g.
    ``n_outputs=1`` for a regression target); KeyError naming the valid names otherwise."""
    try:
        spec = _REGISTRY[name]()
    except KeyError:
        raise UnknownModelError(f"unknown model {name!r}; registered: {list_models()}") from None
    return dataclasses.replace(spec, **overrides) if overrides else spec


def create_model(name: str, **overrides) -> ChartCNN:
    """A freshly initialised ChartCNN of :func:`model_spec` ``(name, **overrides)`` (seed torch
    beforehand for a reproducible init)."""
    return ChartCNN(model_spec(name, **overrides))


# --------------------------------------------------------------------------------------------------
# Baselines (METHOD 5)

I5 = ModelSpec(image_hw=(32, 15), n_blocks=2)
I20 = ModelSpec(image_hw=(64, 60), n_blocks=3, first_stride=(3, 1), first_dilation=(2, 1))
I60 = ModelSpec(image_hw=(96, 180), n_blocks=4, first_stride=(3, 1), first_dilation=(3, 1))

register("I5")(lambda: I5)
register("I20")(lambda: I20)
register("I60")(lambda: I60)


class Table18Row(NamedTuple):
    """One row of Table 18: ``group`` = the parameter with its baseline value as printed in the
    paper (e.g. "Filters (64)"), ``label`` = the variant ("" for the baseline), ``model`` = registry name."""

    group: str
    label: str
    model: str


# (group, label, model name, changes to the I20 spec), in the paper's order (METHOD 9).
_TABLE18_VARIANTS: list[tuple[str, str, str, dict]] = [
    ("Filters (64)", "32", "I20-filters32", {"base_channels": 32}),
    ("Filters (64)", "128", "I20-filters128", {"base_channels": 128}),
    ("Layers (3)", "2", "I20-layers2", {"n_blocks": 2}),
    ("Layers (3)", "4", "I20-layers4", {"n_blocks": 4}),
    ("Dropout (0.50)", "0.00", "I20-dropout0.00", {"dropout": 0.0}),
    ("Dropout (0.50)", "0.25", "I20-dropout0.25", {"dropout": 0.25}),
    ("Dropout (0.50)", "0.75", "I20-dropout0.75", {"dropout": 0.75}),
    ("BN (yes)", "no", "I20-nobn", {"batchnorm": False}),
    ("Xavier (yes)", "no", "I20-noxavier", {"xavier": False}),
    ("Activation (LReLU)", "ReLU", "I20-relu", {"activation": "relu"}),
    ("Max-pool size (2×1)", "2×2", "I20-pool2x2", {"pool": (2, 2)}),
    ("Filter size (5×3)", "3×3", "I20-kernel3x3", {"kernel": (3, 3)}),
    ("Filter size (5×3)", "7×3", "I20-kernel7x3", {"kernel": (7, 3)}),
    ("Dilation/Stride ((2,1)/(3,1))", "(2,1)/(1,1)", "I20-dil21-str11",
     {"first_dilation": (2, 1), "first_stride": (1, 1)}),
    ("Dilation/Stride ((2,1)/(3,1))", "(1,1)/(3,1)", "I20-dil11-str31",
     {"first_dilation": (1, 1), "first_stride": (3, 1)}),
    ("Dilation/Stride ((2,1)/(3,1))", "(1,1)/(1,1)", "I20-dil11-str11",
     {"first_dilation": (1, 1), "first_stride": (1, 1)}),
]

for _group, _label, _name, _changes in _TABLE18_VARIANTS:
    register(_name)(lambda changes=_changes: dataclasses.replace(I20, **changes))

TABLE18: list[Table18Row] = [Table18Row("Baseline", "", "I20")] + [
    Table18Row(g, lab, name) for g, lab, name, _ in _TABLE18_VARIANTS
]
