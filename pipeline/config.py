"""Typed experiment configuration.

Every default is the paper's (docs/method.md); an experiment YAML holds only what differs, section by
section, e.g.::

    name: demo
    panel: {source: synthetic}
    train: {ensemble: 2, epochs: 3}

Unknown sections or keys are errors naming the key and the file (nanoGPT's configurator rule), so a
typo never silently falls back to a default. Command lines may add ``--set train.epochs=2``
overrides, parsed with the same YAML scalar rules and checked the same way.

The resolved config is saved beside every artifact (:func:`save_resolved`), so any output can be
traced back to the exact settings that produced it.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pipeline.errors import InputError


PACKAGE_CONFIG_DIR = Path(__file__).parent / "configs"


class ConfigError(InputError):
    """A configuration file or override is invalid; the message names the key and the file."""


@dataclass
class SyntheticConfig:
    """The embedded synthetic market (see docs/synthetic.md for what is planted)."""

    n_stocks: int = 500
    start: str = "1992-06-01"
    end: str = "2019-12-31"
    seed: int = 20201
    # Multiplies every planted predictive effect; 0 gives a market with no predictability.
    signal_strength: float = 1.0
    # Monte-Carlo paths per sampled state when estimating the Bayes-optimal accuracy.
    bayes_paths: int = 256
    bayes_samples: int = 2000


@dataclass
class PanelConfig:
    """Price-panel stage (docs/method.md section 4)."""

    source: str = "synthetic"  # synthetic | stooq | crsp | yahoo
    path: str | None = None  # file or folder of the raw source (not used by synthetic)
    start: str = "1992-06-01"
    end: str = "2019-12-31"
    # Free data: drop tickers containing '_' or '-' (preferreds, warrants, units); METHOD 4.6.
    common_only: bool = True
    ohlc_errors: str = "repair"  # repair | mask
    # CRSP filters (METHOD 4.1)
    shrcd: list[int] = field(default_factory=lambda: [10, 11])
    exchcd: list[int] = field(default_factory=lambda: [1, 2, 3])
    # Optional free-data filters, off by default (METHOD 4.6)
    min_price: float | None = None
    max_abs_ret: float | None = None
    # Trailing records of close*volume averaged into the market-cap proxy (METHOD 3.5)
    mktcap_proxy_window: int = 60


@dataclass
class ImagesConfig:
    """Chart-image stage (docs/method.md sections 2-3)."""

    # Image sets to build: each entry is "I{W}/{freq}" with freq in week | month | quarter.
    sets: list[str] = field(default_factory=lambda: ["I20/month"])
    ma: bool = True
    volume: bool = True
    start_year: int = 1993
    end_year: int = 2019
    period_ret_mode: str = "strict"  # strict | next_available
    calendar: str = "panel"  # panel: period ends from the panel's own trading days
    stocks_per_shard: int = 1000
    executor: str = "local"  # local | dask
    workers: int | None = None  # None: all cores
    dask_scheduler: str | None = None  # address of an existing Dask scheduler, else a local cluster
    contact_sheet_samples: int = 24


@dataclass
class TrainConfig:
    """Training stage (docs/method.md sections 5-6)."""

    image_set: str = "I20/month"
    model: str = "I20"  # a name in pipeline.models.registry
    horizon: int = 20  # 5 | 20 | 60: which return is the label
    label_return: str = "period"  # period (ret_week/month/quarter) | records (ret_5d/20d/60d)
    split: str = "ssrn"  # ssrn (1993-1999 | 2000-2019) | jf (1993-2000 | 2001-2019) | custom
    insample_years: list[int] | None = None  # for split: custom, [first, last]
    test_years: list[int] | None = None  # for split: custom, [first, last]
    ensemble: int = 5
    epochs: int = 50
    patience: int = 2
    lr: float = 1e-5
    weight_decay: float = 0.0
    # Small-sample recipe variants (the paper's recipe is the default; docs/recovery.md):
    # head_init "base_rate": output layer weights 0 and biases at the training base rate's log-odds,
    # so training starts at P(up) = base rate instead of the large random logits of a Xavier head.
    head_init: str = "paper"  # paper | base_rate
    # Post-hoc calibration of each member's P(up), fitted on its own validation split
    # (pipeline.train.calibration): none (the paper) | temperature | platt.
    calibration: str = "none"
    # Appended to the run folder's name (runs/<run>-<tag>, pipeline.paths.run_name), so variants of one experiment (the
    # recovery study's recipes and sizes) keep their own models, predictions and evaluations.
    run_tag: str = ""
    batch_size: int = 128
    val_fraction: float = 0.3
    seed: int = 42
    norm: str = "insample"  # insample | per_year_first50k
    reproduce_nan_as_down: bool = False
    max_train_images: int | None = None  # subsample the in-sample pool (demo and CPU presets)
    precision: str = "auto"  # auto | bf16 | fp32 (auto: bf16 where the hardware supports it)
    device: str = "auto"  # auto | cpu | cuda
    threads: int | None = None  # torch threads per process (None: the cores shared by the processes)
    num_workers: int = 0
    # Members trained (and predicted) at once in separate processes (pipeline.procs): None = for
    # training one per core on the CPU and one per GPU on CUDA, at most the members left, and for
    # prediction on a CPU one process with all threads (faster there: make bench-stage); 1 = one
    # after another. The same member seeds and splits either way; under torchrun members run one
    # after another.
    parallel_members: int | None = None


# TrainConfig fields that say how the work is laid out on the machine, not what it computes: they
# enter no settings hash (a run resumed with other threads or processes reuses what is finished).
PROCESS_SETTINGS = ("threads", "num_workers", "parallel_members")


@dataclass
class EvaluateConfig:
    """Prediction and evaluation stages (docs/method.md section 7)."""

    weights: list[str] = field(default_factory=lambda: ["ew", "vw"])
    benchmarks: list[str] = field(default_factory=lambda: ["MOM", "STR", "WSTR", "TREND"])
    top500: bool = False
    top500_mode: str = "formation"  # formation | annual_june
    trend_history_days: int = 1000
    predict_batch_size: int = 1024
    # Trading cost per side in basis points, charged on the H-L portfolio's turnover for its
    # net-of-cost returns (pipeline.evaluate.conventions states the rule).
    cost_bps: float = 10.0
    # Table 5: Spearman correlation of P(up) with OHLCV characteristics (pipeline.evaluate
    # .characteristics); needs the panel's close and volume history, so it can be switched off.
    characteristics: bool = True


@dataclass
class GradcamConfig:
    """Interpretation stage (docs/method.md section 8)."""

    year: int | None = None  # None: the last test year
    n_per_side: int = 10
    layer_point: str = "pre_pool"  # pre_pool | post_pool
    members: str = "first"  # first | all
    average_samples: int = 2000


@dataclass
class AblationsConfig:
    """Table-18 ablations (docs/method.md section 9)."""

    variants: list[str] | None = None  # None: every Table-18 variant in the registry
    ensemble: int | None = None  # None: the baseline's ensemble size
    # [first, last] within the baseline's test years: predict and evaluate the variants on these
    # years only (a CPU preset; training is unchanged). None: the baseline's whole test period.
    test_years: list[int] | None = None
    # Subsample the in-sample pool of every variant (the baseline retrained with it) to this many
    # images: a CPU preset like test_years. None: train.max_train_images.
    max_train_images: int | None = None
    parallel: int = 1


@dataclass
class RecoveryConfig:
    """The signal-recovery study (``make study-recovery``; docs/recovery.md): on the synthetic
    market, every recipe is trained at every in-sample pool size (train.max_train_images; each
    member trains on 1 - train.val_fraction of it) and judged against the Bayes bound."""

    pool_sizes: list[int] = field(default_factory=lambda: [5000, 20000, 60000, 145000])
    recipes: list[str] = field(default_factory=lambda: ["paper", "fast"])  # pipeline.train.recipes
    # Fitted after training on each member's validation split: rows are reported raw and calibrated.
    calibration: str = "platt"


@dataclass
class ReportConfig:
    pdf: bool = True
    title: str | None = None


@dataclass
class Config:
    name: str = "default"
    data_dir: str = "data"
    reports_dir: str = "reports"
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    panel: PanelConfig = field(default_factory=PanelConfig)
    images: ImagesConfig = field(default_factory=ImagesConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    gradcam: GradcamConfig = field(default_factory=GradcamConfig)
    ablations: AblationsConfig = field(default_factory=AblationsConfig)
    recovery: RecoveryConfig = field(default_factory=RecoveryConfig)
    report: ReportConfig = field(default_factory=ReportConfig)

    @property
    def experiment_dir(self) -> Path:
        """``data/<name>``: every artifact of this experiment lives below it."""
        return Path(self.data_dir) / self.name


# --------------------------------------------------------------------------------------------------
# Loading


def _resolve_config_path(path: str | Path) -> Path:
    p = Path(path)
    if p.exists():
        return p
    # A bare name ("demo") refers to a config shipped with the package.
    shipped = PACKAGE_CONFIG_DIR / (p.name if p.suffix else f"{p.name}.yaml")
    if shipped.exists():
        return shipped
    raise ConfigError(f"config file not found: {path}")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the dataclass field type ``tp``; ints are accepted for floats."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is float:
        if isinstance(value, str):
            # PyYAML follows YAML 1.1, which reads 1e-4 (no dot) as a string: accept it as a number.
            try:
                return float(value)
            except ValueError:
                raise ConfigError(f"{where}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if isinstance(value, datetime.date):  # YAML reads an unquoted 2019-01-01 as a date
            return value.isoformat()
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    raise ConfigError(f"{where}: unsupported type {tp}")  # pragma: no cover


def _apply(obj: Any, updates: dict, source: str, prefix: str = "") -> None:
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    for key, value in updates.items():
        dotted = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(
                f"unknown config key '{dotted}' in {source}; valid keys here: {sorted(names)}"
            )
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: '{dotted}' must be a mapping of keys")
            _apply(current, value, source, prefix=f"{dotted}.")
        else:
            setattr(obj, key, _coerce(value, hints[key], f"{source}: '{dotted}'"))


def _parse_override(text: str) -> dict:
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like section.key=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except (yaml.YAMLError, ValueError) as e:  # e.g. an impossible date such as 2019-13-01
        raise ConfigError(f"override '{text}': cannot parse the value of '{key}': {e}") from None
    out: dict = {}
    node = out
    parts = key.strip().split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return out


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a mapping with a repeated key (plain YAML keeps the last value
    without a word, so a config with ``lr`` twice would silently train with the second)."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first at line {seen[key] + 1})", key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, then the YAML file's differences, then ``section.key=value`` overrides."""
    cfg = Config()
    if path is not None:
        p = _resolve_config_path(path)
        try:
            data = yaml.load(p.read_text(), Loader=_UniqueKeyLoader) or {}  # safe: a SafeLoader
        except yaml.MarkedYAMLError as e:
            where = f", line {e.problem_mark.line + 1}, column {e.problem_mark.column + 1}" \
                if e.problem_mark is not None else ""
            raise ConfigError(f"{p}{where}: not valid YAML: {e.problem or e.context}") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: the top level must be a mapping of sections")
        _apply(cfg, data, str(p))
    for o in overrides or []:
        _apply(cfg, _parse_override(o), f"override '{o}'")
    validate(cfg)
    return cfg


_CHOICES = {
    "panel.source": ("synthetic", "stooq", "crsp", "yahoo"),
    "panel.ohlc_errors": ("repair", "mask"),
    "images.period_ret_mode": ("strict", "next_available"),
    "images.executor": ("local", "dask"),
    "images.calendar": ("panel",),
    "train.label_return": ("period", "records"),
    "train.split": ("ssrn", "jf", "custom"),
    "train.norm": ("insample", "per_year_first50k"),
    "train.head_init": ("paper", "base_rate"),
    "train.calibration": ("none", "temperature", "platt"),
    "recovery.calibration": ("temperature", "platt"),
    "train.precision": ("auto", "bf16", "fp32"),
    "train.device": ("auto", "cpu", "cuda"),
    "train.horizon": (5, 20, 60),
    "evaluate.top500_mode": ("formation", "annual_june"),
    "gradcam.layer_point": ("pre_pool", "post_pool"),
    "gradcam.members": ("first", "all"),
}


def validate(cfg: Config) -> None:
    for dotted, choices in _CHOICES.items():
        section, key = dotted.split(".")
        value = getattr(getattr(cfg, section), key)
        if value not in choices:
            raise ConfigError(f"'{dotted}' is {value!r}; choose one of {list(choices)}")
    for s in cfg.images.sets:
        parse_image_set(s)
    parse_image_set(cfg.train.image_set)
    tag = cfg.train.run_tag
    if tag and not all(ch.isalnum() or ch in "-_." for ch in tag):
        raise ConfigError(f"'train.run_tag' is {tag!r}: use letters, digits, '-', '_' or '.' only")
    for section in (cfg.panel, cfg.synthetic):
        if str(section.start) > str(section.end):  # ISO dates compare as text
            name = "panel" if section is cfg.panel else "synthetic"
            raise ConfigError(f"'{name}.start' {section.start} is after '{name}.end' {section.end}")
    for key in ("threads", "parallel_members"):
        v = getattr(cfg.train, key)
        if v is not None and v < 1:
            raise ConfigError(f"'train.{key}' is {v}; use a positive number or leave it unset")
    if cfg.train.split == "custom" and not (cfg.train.insample_years and cfg.train.test_years):
        raise ConfigError("train.split: custom needs train.insample_years and train.test_years")
    for w in cfg.evaluate.weights:
        if w not in ("ew", "vw"):
            raise ConfigError(f"'evaluate.weights' entry {w!r}; choose from ['ew', 'vw']")
    c = cfg.evaluate.cost_bps
    if not (c >= 0 and c != float("inf")):  # also refuses NaN
        raise ConfigError(f"'evaluate.cost_bps' is {c!r}; use a finite cost per side >= 0 (basis points)")


# The one statement of the image/rebalance frequencies and of which horizon goes with which
# (METHOD 2.9: the horizon sets the frequency); every module imports these.
FREQUENCIES = ("week", "month", "quarter")
HORIZON_FREQUENCY = {5: "week", 20: "month", 60: "quarter"}
FREQUENCY_HORIZON = {f: h for h, f in HORIZON_FREQUENCY.items()}


def parse_image_set(text: str) -> tuple[int, str]:
    """``"I20/month"`` -> ``(20, "month")``."""
    try:
        size, freq = text.split("/")
        w = int(size.lstrip("I"))
    except ValueError:
        raise ConfigError(f"image set {text!r} must look like 'I20/month'") from None
    if w not in (5, 20, 60) or freq not in FREQUENCIES:
        raise ConfigError(f"image set {text!r}: size must be 5/20/60 and frequency one of {FREQUENCIES}")
    return w, freq


def split_years(cfg: TrainConfig) -> tuple[tuple[int, int], tuple[int, int]]:
    """(first, last) in-sample years and (first, last) test years for the configured split."""
    if cfg.split == "ssrn":
        return (1993, 1999), (2000, 2019)
    if cfg.split == "jf":
        return (1993, 2000), (2001, 2019)
    assert cfg.insample_years and cfg.test_years
    return tuple(cfg.insample_years), tuple(cfg.test_years)  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------------
# Saving


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def section_hash(*sections: Any) -> str:
    """Stable short hash of config sections: a stage reruns only when its inputs' settings change."""
    blob = json.dumps([to_dict(s) if dataclasses.is_dataclass(s) else s for s in sections],
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def save_resolved(cfg: Config, directory: str | Path) -> Path:
    """Write ``config.yaml`` (the complete resolved config) into ``directory`` atomically."""
    from pipeline.io import atomic_write_text

    path = Path(directory) / "config.yaml"
    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))
    return path
