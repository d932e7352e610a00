"""Typed experiment configuration.

Every default is the paper's (docs/method.md); an experiment YAML holds only what differs, section by
section, e.g.::

    name: demo
    panel: {source: synthetic}
    train: {ensemble: 2, epochs: 3}

Unknown sections or keys are errors naming the key and the file (nanoGPT's configurator rule), so a
typo never silently falls back to a default. A field with a fixed set of values is annotated
``Literal[...]`` (``source: Literal["synthetic", "stooq", ...]``): that annotation is the one list
of its choices, and a value outside it is refused naming the key and the file. Command lines may
add ``--set train.epochs=2`` overrides, parsed with the same YAML scalar rules and checked the same
way. Every check that needs only the config runs when it loads (:func:`validate`).

The resolved config is saved beside every artifact (:func:`save_resolved`), so any output can be
traced back to the exact settings that produced it.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pipeline.errors import InputError


PACKAGE_CONFIG_DIR = Path(__file__).parent / "configs"


class ConfigError(InputError):
    """A configuration file or override is invalid; the message names the key and the file."""


# Choices that a stage module also checks (a direct caller bypasses the config): the values are
# read from these types there (typing.get_args), so each list is written once.
PeriodRetMode = Literal["strict", "next_available"]
Calibration = Literal["none", "temperature", "platt"]
LayerPoint = Literal["pre_pool", "post_pool"]


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
    # Trading days: business (Mon-Fri, the default) | daily (every calendar day: a 24/7 market such
    # as a crypto exchange; the generator is otherwise unchanged, one step per calendar day).
    calendar: Literal["business", "daily"] = "business"


@dataclass
class PanelConfig:
    """Price-panel stage (docs/method.md section 4)."""

    source: Literal["synthetic", "stooq", "crsp", "yahoo", "generic"] = "synthetic"
    path: str | None = None  # file or folder of the raw source (not used by synthetic)
    start: str = "1992-06-01"
    end: str = "2019-12-31"
    # Free data: drop tickers containing '_' or '-' (preferreds, warrants, units); METHOD 4.6.
    common_only: bool = True
    ohlc_errors: Literal["repair", "mask"] = "repair"
    # CRSP filters (METHOD 4.1)
    shrcd: list[int] = field(default_factory=lambda: [10, 11])
    exchcd: list[int] = field(default_factory=lambda: [1, 2, 3])
    # Optional free-data filters, off by default (METHOD 4.6)
    min_price: float | None = None
    max_abs_ret: float | None = None
    # Trailing records of close*volume averaged into the market-cap proxy (METHOD 3.5)
    mktcap_proxy_window: int = 60


@dataclass
class GenericColumns:
    """Column names of a generic OHLCV file (``panel.source: generic``), matched case-insensitively."""

    date: str = "date"
    open: str = "open"
    high: str = "high"
    low: str = "low"
    close: str = "close"
    volume: str = "volume"
    # One long file: the column naming each row's instrument. None: one file per instrument, the
    # ticker taken from the file name (generic.ticker_pattern).
    ticker: str | None = None


@dataclass
class GenericConfig:
    """The generic OHLCV adapter (pipeline.panel.generic; docs/interfaces.md "Panel"): any market,
    any calendar (every date in the files is kept, weekends included), no shares outstanding (the
    market cap is the dollar-volume proxy of METHOD 3.5), no exchange or share-type metadata."""

    columns: GenericColumns = field(default_factory=GenericColumns)
    # Names of the columns, in file order, of files without a header line (Binance's kline CSVs);
    # None: line 1 of every file is its header.
    header: list[str] | None = None
    # auto (YYYY-MM-DD or YYYYMMDD, per cell) | iso | yyyymmdd | unix_s | unix_ms | unix_us (epoch
    # timestamps in UTC). A time of day other than midnight is refused: the panel is daily.
    date_format: Literal["auto", "iso", "yyyymmdd", "unix_s", "unix_ms", "unix_us"] = "auto"
    # Files read from a panel.path folder (recursively): a glob on the file name; *.csv, *.csv.gz
    # and *.parquet are understood.
    pattern: str = "*.csv"
    # Regular expression whose first group is the ticker within the file name (e.g. Binance's
    # monthly files BTCUSDT-1d-2021-01.csv: '^([A-Z0-9]+)-'); None: the name without its suffix.
    # Several files of one ticker are concatenated (a repeated date: duplicate_rows, last kept).
    ticker_pattern: str | None = None
    exchange: str = "UNKNOWN"  # written into the panel's exchange column for every row


@dataclass
class ImagesConfig:
    """Chart-image stage (docs/method.md sections 2-3)."""

    # Image sets to build: each entry is "I{W}/{freq}" with freq in week | month | quarter, or
    # "I{B}x{k}/{freq}": B bars of k trading days each (a B*k-day window drawn as a B-bar chart,
    # METHOD 11 time-scale transfer; e.g. "I5x4/month" = 20 days in 5 bars, 32x15 pixels).
    sets: list[str] = field(default_factory=lambda: ["I20/month"])
    ma: bool = True
    volume: bool = True
    start_year: int = 1993
    end_year: int = 2019
    period_ret_mode: PeriodRetMode = "strict"
    calendar: Literal["panel"] = "panel"  # period ends from the panel's own trading days
    stocks_per_shard: int = 1000
    executor: Literal["local", "dask"] = "local"
    workers: int | None = None  # None: all cores
    dask_scheduler: str | None = None  # address of an existing Dask scheduler, else a local cluster
    contact_sheet_samples: int = 24


@dataclass
class TrainConfig:
    """Training stage (docs/method.md sections 5-6)."""

    image_set: str = "I20/month"
    model: str = "I20"  # a name in pipeline.models.registry
    horizon: Literal[5, 20, 60] = 20  # which return is the label (trading days)
    label_return: Literal["period", "records"] = "period"  # ret_week/month/quarter | ret_5d/20d/60d
    # ssrn (1993-1999 | 2000-2019), jf (1993-2000 | 2001-2019), custom (the two lists below)
    split: Literal["ssrn", "jf", "custom"] = "ssrn"
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
    head_init: Literal["paper", "base_rate"] = "paper"
    # Post-hoc calibration of each member's P(up), fitted on its own validation split
    # (pipeline.train.calibration): none (the paper) | temperature | platt.
    calibration: Calibration = "none"
    # Appended to the run folder's name (runs/<run>-<tag>, pipeline.paths.run_name), so variants of one experiment (the
    # recovery study's recipes and sizes) keep their own models, predictions and evaluations.
    run_tag: str = ""
    batch_size: int = 128
    val_fraction: float = 0.3
    seed: int = 42
    norm: Literal["insample", "per_year_first50k"] = "insample"
    reproduce_nan_as_down: bool = False
    # What the network learns (METHOD 3.6): "class" (the paper: up/down, two logits, cross-entropy)
    # or a regression on the label's return, one output and a squared-error loss: "return" (the
    # raw return) or "vol_adjusted_return" (the return over its ex-ante EWMA volatility scaled to
    # the horizon). Regression runs are named <run>-reg / <run>-regvol (pipeline.paths.run_name).
    target: Literal["class", "return", "vol_adjusted_return"] = "class"
    max_train_images: int | None = None  # subsample the in-sample pool (demo and CPU presets)
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto: bf16 where the hardware supports it
    device: Literal["auto", "cpu", "cuda"] = "auto"
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

    weights: list[Literal["ew", "vw"]] = field(default_factory=lambda: ["ew", "vw"])
    benchmarks: list[str] = field(default_factory=lambda: ["MOM", "STR", "WSTR", "TREND"])
    top500: bool = False
    top500_mode: Literal["formation", "annual_june"] = "formation"
    trend_history_days: int = 1000
    predict_batch_size: int = 1024
    # Trading cost per side in basis points, charged on the H-L portfolio's turnover for its
    # net-of-cost returns (pipeline.evaluate.conventions states the rule).
    cost_bps: float = 10.0
    # Table 5: Spearman correlation of P(up) with OHLCV characteristics (pipeline.evaluate
    # .characteristics); needs the panel's close and volume history, so it can be switched off.
    characteristics: bool = True
    # Delayed holding periods (METHOD 7.1): delays d (records after the image date, 0..MAX_DELAY)
    # at which the run's signal is also evaluated, holding period of the label's length starting d
    # records later; [] = none. Writes delays.parquet and figures/delays.png (pipeline.evaluate.delays).
    delays: list[int] = field(default_factory=list)


@dataclass
class GradcamConfig:
    """Interpretation stage (docs/method.md section 8)."""

    year: int | None = None  # None: the last test year
    n_per_side: int = 10
    layer_point: LayerPoint = "pre_pool"
    members: Literal["first", "all"] = "first"
    average_samples: int = 2000


InterpretMethod = Literal["filters", "saliency", "occlusion", "embedding", "class_model", "robustness"]
INTERPRET_METHODS: tuple[str, ...] = typing.get_args(InterpretMethod)


@dataclass
class InterpretConfig:
    """Interpretation toolkit beyond Grad-CAM (``make interpret``; docs/method.md section 8.1).

    Images are drawn (seeded) from one test year; pixel quantities (epsilons) are in the stored
    image's units, 0 (background) to 255 (ink)."""

    year: int | None = None  # None: the last test year with predictions and images
    members: Literal["first", "all"] = "all"  # which members' calibrated P(up) is explained
    methods: list[InterpretMethod] = field(default_factory=lambda: list(INTERPRET_METHODS))
    n_images: int = 100  # test images for saliency, the embedding and the planted-signal measure
    last_days: int = 5  # width (days) of the "last bars" region (the planted reversal: 5 closes)
    surge_quantile: float = 0.8  # surge days: |planted surge x direction| above this quantile
    occlusion_images: int = 20
    occlusion_patch: list[int] = field(default_factory=lambda: [8, 6])  # rows, columns (= stride)
    tsne_perplexity: float = 20.0
    class_model_steps: int = 100
    class_model_lr: float = 8.0  # pixel units per Adam step (2 gives smooth but faint images)
    class_model_l2: float = 0.5  # weight of the mean squared pixel (0..1 scale)
    class_model_tv: float = 3.0  # weight of the mean absolute neighbour difference (0..1 scale)
    robustness_images: int = 40
    epsilons: list[float] = field(default_factory=lambda: [2.0, 4.0, 8.0, 16.0, 32.0, 64.0])
    pgd_steps: int = 5
    bisect_steps: int = 6  # refinements of each image's FGSM flip point between two grid values
    batch_size: int = 256
    seed: int = 0


@dataclass
class TransferConfig:
    """Apply a model trained in another experiment to this one's images (pipeline.train.transfer;
    docs/method.md section 6.1): ``make train`` then copies (direct) or re-fits the head of (head)
    the source run instead of training, and predict/evaluate/report run as usual."""

    # none | direct (the source's ensemble unchanged) | head (frozen convolutions, each member's
    # final linear layer re-initialised and fitted on this experiment's in-sample images)
    mode: Literal["none", "direct", "head"] = "none"
    # The source experiment: a config (shipped name or path) whose run is taken from
    # <data_dir>/<its name>/runs/ (this config's data_dir); or leave it unset and give source_run.
    source_config: str | None = None
    # With source_config: the run's folder name under that experiment's runs/ (None: the run that
    # config trains). Without it: the path of a run folder (one holding model.json).
    source_run: str | None = None


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
class TimescaleConfig:
    """The time-scale transfer study (``make study-timescale``; METHOD 11, JF Tables 11-12): the
    model trained on ``source`` is applied unchanged to each aggregated image set of ``targets``
    and judged beside the model trained on the un-aggregated set of the same window and frequency
    (pipeline.studies.timescale)."""

    # Daily-bar image set the transferred model is trained on (model I{W}, horizon of its frequency).
    source: str = "I5/week"
    # Aggregated sets "I{B}x{k}/{freq}" with B = the source's bars; each is compared with the model
    # trained on "I{B*k}/{freq}" (so B*k must be a trainable window: 5, 20 or 60).
    targets: list[str] = field(default_factory=lambda: ["I5x4/month", "I5x12/quarter"])


@dataclass
class RecoveryConfig:
    """The signal-recovery study (``make study-recovery``; docs/recovery.md): on the synthetic
    market, every recipe is trained at every in-sample pool size (train.max_train_images; each
    member trains on 1 - train.val_fraction of it) and judged against the Bayes bound."""

    pool_sizes: list[int] = field(default_factory=lambda: [5000, 20000, 60000, 145000])
    recipes: list[str] = field(default_factory=lambda: ["paper", "fast"])  # pipeline.train.recipes
    # Fitted after training on each member's validation split: rows are reported raw and calibrated.
    calibration: Literal["temperature", "platt"] = "platt"


@dataclass
class ReportConfig:
    pdf: bool = True
    title: str | None = None
    # Other experiments (config names or paths) whose extension results this report shows: a
    # time-scale study (a config with a timescale section) and transfers from this experiment
    # (configs whose transfer.source_config names it). Each is read from its own artifacts.
    related: list[str] = field(default_factory=list)


@dataclass
class Config:
    name: str = "default"
    data_dir: str = "data"
    reports_dir: str = "reports"
    # Folder whose panel/ and images/ this experiment reads (and builds); None = its own folder,
    # data/<name>. A sub-experiment that changes only the model (the ablations, the precision
    # benchmark) names its parent experiment here, so both share one panel and one image set.
    inputs_dir: str | None = None
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    panel: PanelConfig = field(default_factory=PanelConfig)
    images: ImagesConfig = field(default_factory=ImagesConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    gradcam: GradcamConfig = field(default_factory=GradcamConfig)
    generic: GenericConfig = field(default_factory=GenericConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)
    interpret: InterpretConfig = field(default_factory=InterpretConfig)
    ablations: AblationsConfig = field(default_factory=AblationsConfig)
    recovery: RecoveryConfig = field(default_factory=RecoveryConfig)
    timescale: TimescaleConfig = field(default_factory=TimescaleConfig)
    report: ReportConfig = field(default_factory=ReportConfig)

    @property
    def experiment_dir(self) -> Path:
        """``data/<name>``: every artifact of this experiment lives below it."""
        return Path(self.data_dir) / self.name

    @property
    def inputs_root(self) -> Path:
        """The folder holding this experiment's ``panel/`` and ``images/``: ``inputs_dir`` or
        :attr:`experiment_dir`."""
        return Path(self.inputs_dir) if self.inputs_dir is not None else self.experiment_dir


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


def _choice_error(where: str, value: Any, choices: tuple) -> ConfigError:
    """The one message for a value outside a ``Literal[...]`` field's choices."""
    return ConfigError(f"{where} is {value!r}; choose one of {list(choices)}")


def _is_choice(value: Any, choices: tuple) -> bool:
    """``value`` is one of ``choices`` with the same type (so True is not the choice 1, 20.0 not 20)."""
    return any(type(value) is type(c) and value == c for c in choices)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the dataclass field type ``tp``; ints are accepted for floats, and a
    ``Literal[...]`` field takes one of its values (read by the rules of their type, str or int)."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        choices = typing.get_args(tp)
        kinds = {type(c) for c in choices}
        if len(kinds) != 1:  # pragma: no cover - a definition error, caught by the config tests
            raise TypeError(f"{where}: a Literal field must list values of one type, got {choices}")
        v = _coerce(value, kinds.pop(), where)
        if not _is_choice(v, choices):
            raise _choice_error(where, v, choices)
        return v
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
    return _nest({}, key.strip(), value)


def _nest(into: dict, dotted: str, value: Any) -> dict:
    """Put ``value`` at ``section.key`` of the nested mapping ``into`` (as a YAML file holds it)."""
    node = into
    parts = dotted.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return into


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


def _check_choices(obj: Any, prefix: str = "") -> None:
    """ConfigError unless every ``Literal[...]`` field of the dataclass ``obj`` and of its nested
    sections (also inside ``list[...]`` and ``... | None``) holds one of its values. The allowed
    values are read from the annotations, so a new Literal field is checked with no list to update.
    Values read from a file or override were already checked by :func:`_coerce` (naming the file);
    this also catches a value set in code before :func:`validate`."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            _check_choices(value, f"{prefix}{f.name}.")
        else:
            _check_choice(value, hints[f.name], f"'{prefix}{f.name}'")


def _check_choice(value: Any, tp: Any, where: str) -> None:
    origin = typing.get_origin(tp)
    if origin is Literal:
        choices = typing.get_args(tp)
        if not _is_choice(value, choices):
            raise _choice_error(where, value, choices)
    elif origin is list and isinstance(value, list):
        (item_tp,) = typing.get_args(tp)
        for i, v in enumerate(value):
            _check_choice(v, item_tp, f"{where}[{i}]")
    elif origin in (typing.Union, types.UnionType) and value is not None:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:  # X | None; no field is a union of several types holding a Literal
            _check_choice(value, args[0], where)


def derive(cfg: Config, changes: dict[str, Any], check: bool = True) -> Config:
    """A copy of ``cfg`` with ``changes`` (``{"train.model": "I20", "data_dir": ...}``) applied by
    the rules of a config file (values coerced to the field's type, unknown keys refused) and
    validated; ``cfg`` itself is unchanged. The one way a stage, study or benchmark makes a variant
    of an experiment's config.

    ``check=False`` skips :func:`validate`, for a config that no one trains from: the time-scale
    study's transfer runs predict an I5 model on aggregated bars, which training refuses."""
    nested: dict = {}
    for key, value in changes.items():
        _nest(nested, key, value)
    out = copy.deepcopy(cfg)
    _apply(out, nested, "a derived config (" + ", ".join(f"{k}={v!r}" for k, v in changes.items()) + ")")
    if check:
        validate(out)
    return out


def validate(cfg: Config) -> None:
    """Every check of a loaded config that needs nothing but the config (:func:`load_config` calls
    it after the file and the overrides): the choices of the Literal fields, then the ranges and
    the settings that must agree with each other. ConfigError naming the key(s) otherwise."""
    _check_choices(cfg)
    _validate_dates(cfg)
    for s in cfg.images.sets:
        parse_image_set(s)
    parse_image_set(cfg.train.image_set)
    _validate_image_sets(cfg)
    tag = cfg.train.run_tag
    if tag and not all(ch.isalnum() or ch in "-_." for ch in tag):
        raise ConfigError(f"'train.run_tag' is {tag!r}: use letters, digits, '-', '_' or '.' only")
    for key in ("threads", "parallel_members"):
        v = getattr(cfg.train, key)
        if v is not None and v < 1:
            raise ConfigError(f"'train.{key}' is {v}; use a positive number or leave it unset")
    if cfg.train.split == "custom" and not (cfg.train.insample_years and cfg.train.test_years):
        raise ConfigError("train.split: custom needs train.insample_years and train.test_years")
    c = cfg.evaluate.cost_bps
    if not (c >= 0 and c != float("inf")):  # also refuses NaN
        raise ConfigError(f"'evaluate.cost_bps' is {c!r}; use a finite cost per side >= 0 (basis points)")
    if is_regression(cfg.train.target):
        if cfg.train.calibration != "none":
            raise ConfigError(
                f"'train.calibration' is {cfg.train.calibration!r} but 'train.target' is "
                f"{cfg.train.target!r}: temperature and Platt scaling calibrate a classifier's P(up); "
                "a regression run needs train.calibration: none")
        if cfg.train.reproduce_nan_as_down:
            raise ConfigError(
                f"'train.reproduce_nan_as_down' is true but 'train.target' is {cfg.train.target!r}: "
                "turning a missing return into a 'down' label is a classification parity flag; a "
                "regression target has no value for a missing return (leave the flag off)")
    d = cfg.evaluate.delays
    bad = [x for x in d if not 0 <= x <= MAX_DELAY]
    if bad:
        raise ConfigError(f"'evaluate.delays' has {bad}: a delay counts records after the image "
                          f"date and must lie in 0..{MAX_DELAY}")
    if len(set(d)) != len(d):
        raise ConfigError(f"'evaluate.delays' {d} lists a delay twice")
    _validate_interpret(cfg)
    _validate_generic(cfg)
    _validate_transfer(cfg)
    check_ablations(cfg)
    _validate_recovery(cfg)


def _validate_dates(cfg: Config) -> None:
    """panel.start/end and synthetic.start/end are dates (as pandas reads them), start <= end."""
    import pandas as pd

    for name in ("panel", "synthetic"):
        section = getattr(cfg, name)
        days = {}
        for key in ("start", "end"):
            v = getattr(section, key)
            try:
                days[key] = pd.Timestamp(v)
            except (ValueError, TypeError):
                days[key] = pd.NaT
            if pd.isna(days[key]):  # an empty text reads as NaT without an error
                raise ConfigError(f"{name}.{key} = {v!r} is not a date (use YYYY-MM-DD)")
            if days[key].tzinfo is not None:  # a day with a zone compares with one without
                days[key] = days[key].tz_localize(None)
        if days["start"] > days["end"]:
            raise ConfigError(f"'{name}.start' {section.start} is after '{name}.end' {section.end}")


def check_ablations(cfg: Config) -> None:
    """The ablations section's ranges: ensemble >= 1, max_train_images >= 10, test_years [first,
    last] within the test years of train.split. :func:`validate` runs it at load and
    ``pipeline.ablations.core.ablation_config`` again on the config it is handed. (Variant names
    are checked against the model registry by ``ablation_models``, which imports the models.)"""
    a = cfg.ablations
    if a.ensemble is not None and a.ensemble < 1:
        raise ConfigError(f"'ablations.ensemble' must be >= 1, got {a.ensemble}")
    if a.test_years is not None:
        test = split_years(cfg.train)[1]
        years = a.test_years
        if len(years) != 2 or not test[0] <= years[0] <= years[1] <= test[1]:
            raise ConfigError(f"'ablations.test_years' must be [first, last] within the test years "
                              f"{list(test)} of split {cfg.train.split}, got {years}")
    if a.max_train_images is not None and a.max_train_images < 10:
        raise ConfigError(f"'ablations.max_train_images' must be >= 10, got {a.max_train_images}")


def _validate_recovery(cfg: Config) -> None:
    """The recovery study's pool sizes (>= 10 images each, at least one) and recipes (at least one,
    each a name in pipeline.train.recipes.RECIPES)."""
    from pipeline.train.recipes import RECIPES  # imports this module: loaded here, not at the top

    r = cfg.recovery
    if not r.pool_sizes or min(r.pool_sizes) < 10:
        raise ConfigError(f"'recovery.pool_sizes' must list sizes >= 10, got {r.pool_sizes}")
    if not r.recipes:
        raise ConfigError("'recovery.recipes' is empty")
    bad = [name for name in r.recipes if name not in RECIPES]
    if bad:
        raise ConfigError(f"'recovery.recipes' has unknown recipe(s) {bad}; choose from {sorted(RECIPES)}")


# Training targets (METHOD 3.6): the classifier of the paper and the regressions on the return.
REGRESSION_TARGETS = ("return", "vol_adjusted_return")
# Longest delay of the holding period after the image date, in records (METHOD 7.1).
MAX_DELAY = 5


def is_regression(target: str) -> bool:
    """True for the regression targets (one output, squared-error loss), False for "class"."""
    return target in REGRESSION_TARGETS


def model_outputs(target: str) -> int:
    """Width of the network's output layer: 2 logits for "class", 1 predicted value otherwise."""
    return 1 if is_regression(target) else 2


# Settings added after runs existed: at these defaults they stay out of the settings hashes
# (hash_view), so a run or evaluation made before the setting existed is not redone for it.
HASH_NEUTRAL_DEFAULTS = {"train": {"target": "class"}, "evaluate": {"delays": []},
                         "synthetic": {"calendar": "business"}}


def hash_view(section: str, obj: Any) -> dict:
    """``to_dict(obj)`` of config section ``section`` without its hash-neutral defaults."""
    d = to_dict(obj)
    for k, v in HASH_NEUTRAL_DEFAULTS.get(section, {}).items():
        if k in d and d[k] == v:
            del d[k]
    return d


def _validate_generic(cfg: Config) -> None:
    """The generic source: column names, the ticker rule, and the filters it cannot apply."""
    import re

    g, p = cfg.generic, cfg.panel
    cols = dataclasses.asdict(g.columns)
    named = {k: v for k, v in cols.items() if v is not None}
    for k, v in named.items():
        if not str(v).strip():
            raise ConfigError(f"'generic.columns.{k}' is empty; give the column's name")
    lower = [str(v).lower() for v in named.values()]
    dup = sorted({v for v in lower if lower.count(v) > 1})
    if dup:
        raise ConfigError(f"'generic.columns' maps several fields to the same column {dup}: {named}")
    if g.header is not None:
        missing = [v for v in named.values() if v.lower() not in (h.lower() for h in g.header)]
        if missing:
            raise ConfigError(f"'generic.header' {g.header} lacks the column(s) {missing} named in "
                              "'generic.columns'")
    if g.ticker_pattern is not None:
        try:
            groups = re.compile(g.ticker_pattern).groups
        except re.error as e:
            raise ConfigError(f"'generic.ticker_pattern' {g.ticker_pattern!r} is not a regular "
                              f"expression: {e}") from None
        if groups < 1:
            raise ConfigError(f"'generic.ticker_pattern' {g.ticker_pattern!r} needs a group (...) "
                              "around the ticker")
        if g.columns.ticker is not None:
            raise ConfigError("'generic.ticker_pattern' and 'generic.columns.ticker' are both set: "
                              "the ticker comes from the file name or from a column, not both")
    if p.source != "generic":
        return
    defaults = PanelConfig()
    for key in ("shrcd", "exchcd"):
        if getattr(p, key) != getattr(defaults, key):
            raise ConfigError(f"'panel.{key}' {getattr(p, key)} is a CRSP filter; panel.source "
                              "generic has no share or exchange codes: remove it")
    if p.common_only:
        raise ConfigError("'panel.common_only' is true, but its '_'/'-' ticker rule marks US "
                          "preferreds and warrants and panel.source generic has no share types "
                          "(it would drop e.g. BTC-USD): set panel.common_only: false")


def _validate_transfer(cfg: Config) -> None:
    """transfer.*: a source is named exactly when a mode is on, and the source's model draws and
    reads the same images as this experiment (model, window, moving average, volume bars)."""
    x = cfg.transfer
    if x.mode == "none":
        for key in ("source_config", "source_run"):
            if getattr(x, key) is not None:
                raise ConfigError(f"'transfer.{key}' is set but 'transfer.mode' is none: choose "
                                  "direct or head, or remove it")
        return
    if x.source_config is None and x.source_run is None:
        raise ConfigError(f"'transfer.mode' is {x.mode}: name the source with "
                          "'transfer.source_config' (and optionally 'transfer.source_run') or give "
                          "'transfer.source_run' as a run folder")
    for key in ("source_config", "source_run"):
        v = getattr(x, key)
        if v is not None and not str(v).strip():
            raise ConfigError(f"'transfer.{key}' is empty")
    if x.source_config is not None:
        src = load_config(x.source_config)
        if src.transfer.mode != "none":
            raise ConfigError(f"'transfer.source_config' {x.source_config} is itself a transfer "
                              f"(transfer.mode {src.transfer.mode}): transfer from its source instead")
        if src.name == cfg.name:
            raise ConfigError(f"'transfer.source_config' {x.source_config} is this experiment "
                              f"({cfg.name}): transfer needs another experiment's run")
        source = {"model": src.train.model, "window": parse_image_set(src.train.image_set)[0],
                  "ma": src.images.ma, "volume": src.images.volume,
                  "image_set": src.train.image_set}
        where = f"transfer.source_config {x.source_config}"
    else:
        card_path = Path(x.source_run) / "model.json"
        if not card_path.exists():  # checked again, and named, when the run is read
            return
        card = json.loads(card_path.read_text())
        chart = card.get("chart", {})
        source = {"model": card.get("model"), "window": chart.get("window"), "ma": chart.get("ma"),
                  "volume": chart.get("volume"), "image_set": card.get("image_set")}
        where = f"transfer.source_run {x.source_run}"
    check_transfer_fits(source, cfg, where)


def check_transfer_fits(source: dict, cfg: Config, where: str) -> None:
    """ConfigError unless the source ({"model", "window", "ma", "volume", "image_set"}) takes this
    experiment's images unchanged: the same model name (so the same input size and layers), the
    same chart window (input size) and the same chart elements."""
    window = parse_image_set(cfg.train.image_set)[0]
    mine = {"model": cfg.train.model, "window": window, "ma": cfg.images.ma,
            "volume": cfg.images.volume}
    names = {"model": "train.model", "window": "the chart window of train.image_set",
             "ma": "images.ma", "volume": "images.volume"}
    for key, ours in mine.items():
        if source.get(key) != ours:
            raise ConfigError(
                f"{where} was trained with {names[key]} {source.get(key)!r} (image set "
                f"{source.get('image_set')}) but this experiment ({cfg.name}) has {names[key]} "
                f"{ours!r} (train.image_set {cfg.train.image_set}): a transferred model must read "
                "images of the same size, drawn the same way")


def _validate_interpret(cfg: Config) -> None:
    """The interpret section's ranges, and the settings it must agree with (train.image_set)."""
    it = cfg.interpret
    if len(set(it.methods)) != len(it.methods) or not it.methods:
        raise ConfigError(f"'interpret.methods' is {it.methods}: list each method once, at least one")
    for key in ("n_images", "occlusion_images", "robustness_images", "class_model_steps",
                "pgd_steps", "batch_size", "last_days"):
        if getattr(it, key) < 1:
            raise ConfigError(f"'interpret.{key}' is {getattr(it, key)}; use a positive number")
    if it.bisect_steps < 0:
        raise ConfigError(f"'interpret.bisect_steps' is {it.bisect_steps}; use 0 or more")
    window = parse_image_set(cfg.train.image_set)[0]
    if it.last_days > window:
        raise ConfigError(f"'interpret.last_days' is {it.last_days} but train.image_set "
                          f"{cfg.train.image_set!r} has {window} days")
    if not 0.0 < it.surge_quantile < 1.0:
        raise ConfigError(f"'interpret.surge_quantile' is {it.surge_quantile}; use a value in (0, 1)")
    if len(it.occlusion_patch) != 2 or min(it.occlusion_patch) < 1:
        raise ConfigError(f"'interpret.occlusion_patch' is {it.occlusion_patch}; give [rows, columns] >= 1")
    eps = it.epsilons
    if not eps or any(not 0.0 < e <= 255.0 for e in eps) or sorted(set(eps)) != list(eps):
        raise ConfigError(f"'interpret.epsilons' is {eps}; give strictly increasing pixel "
                          "amounts in (0, 255]")
    if "embedding" in it.methods and not 1.0 <= it.tsne_perplexity < it.n_images:
        raise ConfigError(f"'interpret.tsne_perplexity' is {it.tsne_perplexity}; t-SNE needs 1 <= "
                          f"perplexity < interpret.n_images ({it.n_images})")
    for key in ("class_model_lr", "class_model_l2", "class_model_tv"):
        v = getattr(it, key)
        if not (v >= 0 and v != float("inf")) or (key == "class_model_lr" and v == 0):
            raise ConfigError(f"'interpret.{key}' is {v!r}; use a finite value >= 0 (lr > 0)")


# The one statement of the image/rebalance frequencies and of which horizon goes with which
# (METHOD 2.9: the horizon sets the frequency); every module imports these.
FREQUENCIES = ("week", "month", "quarter")
HORIZON_FREQUENCY = {5: "week", 20: "month", 60: "quarter"}
FREQUENCY_HORIZON = {f: h for h, f in HORIZON_FREQUENCY.items()}


def parse_image_set(text: str) -> tuple[int, str]:
    """``"I20/month"`` -> ``(20, "month")``; ``"I5x4/month"`` -> ``(5, "month")``: the bars drawn
    (the image size, the model's input) and the frequency. :func:`image_set_spec` has the days."""
    spec = image_set_spec(text)
    return spec.bars, spec.freq


@dataclass(frozen=True)
class ImageSetSpec:
    """One image set name, read: ``bars`` drawn (5/20/60: the image size), ``bar_days`` trading
    days per bar (1 = daily bars; k > 1 = the METHOD 11 aggregation), the period-end ``freq``."""

    bars: int
    bar_days: int
    freq: str

    @property
    def window_days(self) -> int:
        """Trading days the chart covers (records per image; 2x that with the moving average)."""
        return self.bars * self.bar_days

    @property
    def aggregated(self) -> bool:
        return self.bar_days > 1

    @property
    def folder(self) -> str:
        """Folder name under images/: ``I20_month``, ``I5x4_month``."""
        agg = f"x{self.bar_days}" if self.aggregated else ""
        return f"I{self.bars}{agg}_{self.freq}"

    @property
    def native(self) -> str:
        """The daily-bar set of the same window and frequency (``I5x4/month`` -> ``I20/month``)."""
        return f"I{self.window_days}/{self.freq}"


def image_set_spec(text: str) -> ImageSetSpec:
    """Read ``"I{W}/{freq}"`` or ``"I{B}x{k}/{freq}"`` (B bars of k days); ConfigError naming it."""
    form = "must look like 'I20/month' (daily bars) or 'I5x4/month' (5 bars of 4 days)"
    try:
        size, freq = text.split("/")
    except ValueError:
        raise ConfigError(f"image set {text!r} {form}") from None
    bars_text, sep, days_text = size.lstrip("I").partition("x")
    try:
        bars = int(bars_text)
    except ValueError:
        raise ConfigError(f"image set {text!r} {form}") from None
    bar_days = 1
    if sep:
        try:
            bar_days = int(days_text)
        except ValueError:
            raise ConfigError(f"image set {text!r}: {days_text!r} days per bar is not a whole number "
                              "of trading days; a bar aggregates k >= 2 whole days "
                              "('I5x4/month': 5 bars of 4 days)") from None
        if bar_days < 2:
            raise ConfigError(f"image set {text!r}: k = {bar_days} days per bar; an aggregated bar "
                              f"holds k >= 2 days (daily bars are written 'I{bars}/{freq}')")
    if bars not in (5, 20, 60) or freq not in FREQUENCIES:
        raise ConfigError(f"image set {text!r}: size must be 5/20/60 and frequency one of {FREQUENCIES}")
    return ImageSetSpec(bars, bar_days, freq)


def _panel_span(cfg: Config) -> tuple[str, str, str]:
    """(first day, last day, the settings that set them) of the daily records the panel can hold for
    the image stage: the synthetic market's or the source's dates, up to images.end_year."""
    sec = "synthetic" if cfg.panel.source == "synthetic" else "panel"
    start, end = str(getattr(cfg, sec).start), str(getattr(cfg, sec).end)
    last = min(end, f"{cfg.images.end_year}-12-31")
    return start, last, f"'{sec}.start' {start} .. '{sec}.end' {end}, 'images.end_year' {cfg.images.end_year}"


def _validate_image_sets(cfg: Config) -> None:
    """Refuse image sets no panel of these settings could draw (a window longer than the trading
    days it spans) and time-scale transfers that cannot be made (METHOD 11)."""
    import numpy as np

    start, last, where = _panel_span(cfg)
    # Trading days are at most the weekdays (every calendar day for a market that trades daily).
    every_day = cfg.panel.source == "generic" or (
        cfg.panel.source == "synthetic" and getattr(cfg.synthetic, "calendar", "business") == "daily")
    try:
        a, b = np.datetime64(start, "D"), np.datetime64(last, "D") + 1
        weekdays = int((b - a) // np.timedelta64(1, "D")) if every_day else int(np.busday_count(a, b))
    except ValueError:
        weekdays = None  # a date pandas reads but numpy does not ('2019/06/01'): no bound here
    ts = cfg.timescale
    # Only the sets this config draws or trains on: the time-scale study's sets are checked when
    # the study builds them (they are defaults every config carries).
    named = [("images.sets", s) for s in cfg.images.sets] + [("train.image_set", cfg.train.image_set)]
    for key, s in named:
        spec = image_set_spec(s)
        if weekdays is not None and spec.window_days > weekdays:
            raise ConfigError(
                f"'{key}' {s!r} draws windows of {spec.window_days} trading days, but the panel "
                f"({where}) spans at most {max(weekdays, 0)} trading days: no image could be drawn")
    if image_set_spec(cfg.train.image_set).aggregated:
        # A model card records daily-bar charts (its window), which make score would redraw.
        raise ConfigError(
            f"'train.image_set' {cfg.train.image_set!r} has aggregated bars: models are trained on "
            "daily bars; an aggregated set is what `make study-timescale` applies a trained model "
            "to (timescale.targets)")
    src = image_set_spec(ts.source)
    if src.aggregated:
        raise ConfigError(f"'timescale.source' {ts.source!r}: the transferred model is trained on "
                          f"daily bars; use 'I{src.bars}/{src.freq}'")
    for s in ts.targets:
        spec = image_set_spec(s)
        if not spec.aggregated:
            raise ConfigError(f"'timescale.targets' entry {s!r} has daily bars; a target aggregates "
                              f"k >= 2 days per bar (e.g. 'I{src.bars}x4/month')")
        if spec.bars != src.bars:
            raise ConfigError(
                f"'timescale.targets' entry {s!r} draws {spec.bars} bars but 'timescale.source' "
                f"{ts.source!r} draws {src.bars}: the model's input size differs, it cannot be "
                f"applied unchanged (use 'I{src.bars}x<k>/<freq>')")
        if spec.window_days not in (5, 20, 60):
            raise ConfigError(
                f"'timescale.targets' entry {s!r} covers {spec.window_days} days: no model is "
                "trained at that window to compare with (5 x 4 = 20 or 5 x 12 = 60 days)")
    if len(set(ts.targets)) != len(ts.targets):
        raise ConfigError(f"'timescale.targets' {ts.targets} lists a set twice")


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
    # Settings added later at their defaults leave every hash as it was (HASH_NEUTRAL_DEFAULTS).
    names = {SyntheticConfig: "synthetic", TrainConfig: "train", EvaluateConfig: "evaluate"}
    blob = json.dumps([hash_view(names.get(type(s), ""), s) if dataclasses.is_dataclass(s) else s
                       for s in sections], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def save_resolved(cfg: Config, directory: str | Path) -> Path:
    """Write ``config.yaml`` (the complete resolved config) into ``directory`` atomically."""
    from pipeline.io import atomic_write_text

    path = Path(directory) / "config.yaml"
    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))
    return path
