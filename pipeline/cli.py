"""Shared command-line entry for the stages: ``python -m pipeline.<stage> --config X --set k=v``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from pipeline.config import Config, ConfigError, load_config
from pipeline.errors import InputError


def setup_logging(verbose: bool = False) -> None:
    """The project's own loggers (pipeline.*, benchmarks.*) at INFO (DEBUG with -v); third-party
    ones at WARNING (fontTools, matplotlib, WeasyPrint and the like log every step at INFO)."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    for name in ("pipeline", "benchmarks", "__main__"):  # __main__: a module run with -m
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.INFO)


def parse_args(description: str, argv: list[str] | None = None,
               extra: Callable[[argparse.ArgumentParser], None] | None = None
               ) -> tuple[Config, argparse.Namespace]:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--config", default=None,
                   help="experiment YAML (a path, or the name of a shipped config such as 'demo')")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one setting, e.g. --set train.epochs=2 (repeatable)")
    p.add_argument("-v", "--verbose", action="store_true")
    if extra:
        extra(p)
    args = p.parse_args(argv)
    setup_logging(args.verbose)
    if getattr(args, "model", None):  # --model NAME is --set train.model=NAME (model_option)
        args.overrides.append(f"train.model={args.model}")
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    return cfg, args


def model_option(p: argparse.ArgumentParser) -> None:
    """``--model NAME``: a shorthand for ``--set train.model=NAME`` (the run of that registry
    model: an ablation variant, say), applied after the other overrides."""
    p.add_argument("--model", default=None, metavar="NAME",
                   help="registry model of the run (shorthand for --set train.model=NAME)")


def run_stage(description: str, body: Callable[[Config, argparse.Namespace], object],
              argv: list[str] | None = None,
              extra: Callable[[argparse.ArgumentParser], None] | None = None) -> None:
    """Parse arguments, run ``body(cfg, args)``. The project's own input errors (pipeline.errors:
    bad input, missing or stale artifacts, refused settings) and a missing file exit 2 with one
    clear line; anything else is a bug and keeps its traceback (exit 1)."""
    cfg, args = parse_args(description, argv, extra)
    try:
        body(cfg, args)
    except (InputError, FileNotFoundError) as e:
        if args.verbose:
            raise
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
