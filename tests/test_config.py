from pathlib import Path

import pytest
import yaml

from pipeline.config import (Config, ConfigError, load_config, parse_image_set, save_resolved,
                             section_hash, split_years)


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "exp.yaml"
    p.write_text(text)
    return p


def test_defaults_are_the_papers():
    cfg = load_config()
    assert cfg.train.lr == 1e-5 and cfg.train.batch_size == 128 and cfg.train.epochs == 50
    assert cfg.train.ensemble == 5 and cfg.train.patience == 2 and cfg.train.val_fraction == 0.3
    assert split_years(cfg.train) == ((1993, 1999), (2000, 2019))


def test_yaml_holds_only_differences(tmp_path):
    cfg = load_config(write(tmp_path, "name: x\ntrain: {epochs: 3, lr: 1}\n"))
    assert cfg.name == "x" and cfg.train.epochs == 3
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)  # ints accepted for floats
    assert cfg.train.batch_size == 128  # untouched default


@pytest.mark.parametrize("text, key", [
    ("trian: {epochs: 3}\n", "trian"),
    ("train: {epoch: 3}\n", "train.epoch"),
    ("synthetic: {n_stock: 3}\n", "synthetic.n_stock"),
])
def test_unknown_keys_name_key_and_file(tmp_path, text, key):
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert f"'{key}'" in str(e.value) and str(p) in str(e.value)


@pytest.mark.parametrize("text, fragment", [
    ("train: {epochs: three}\n", "train.epochs"),
    ("train: {epochs: true}\n", "train.epochs"),
    ("panel: {source: bloomberg}\n", "panel.source"),
    ("train: {horizon: 10}\n", "train.horizon"),
    ("images: {sets: [I21/month]}\n", "I21/month"),
    ("train: {split: custom}\n", "custom"),
    ("train: 3\n", "train"),
    ("- a\n- b\n", "top level"),
])
def test_invalid_values_are_refused(tmp_path, text, fragment):
    with pytest.raises(ConfigError, match=None) as e:
        load_config(write(tmp_path, text))
    assert fragment in str(e.value)


def test_overrides_and_shipped_names():
    cfg = load_config("demo", ["train.epochs=7", "images.sets=[I5/week, I20/month]"])
    assert cfg.name == "demo" and cfg.train.epochs == 7
    assert cfg.images.sets == ["I5/week", "I20/month"]
    with pytest.raises(ConfigError, match="train.nope"):
        load_config(None, ["train.nope=1"])
    with pytest.raises(ConfigError, match="not found"):
        load_config("no-such-config")


def test_custom_split_and_image_set_parsing():
    cfg = load_config(None, ["train.split=custom", "train.insample_years=[2005, 2009]",
                             "train.test_years=[2010, 2019]"])
    assert split_years(cfg.train) == ((2005, 2009), (2010, 2019))
    assert parse_image_set("I60/quarter") == (60, "quarter")


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(None, ["train.epochs=4"])
    path = save_resolved(cfg, tmp_path)
    data = yaml.safe_load(path.read_text())
    assert data["train"]["epochs"] == 4
    again = load_config(path)  # a saved resolved config is itself a valid experiment file
    assert again == cfg
    assert section_hash(cfg.train) == section_hash(again.train)
    assert section_hash(cfg.train) != section_hash(Config().train)


def test_every_shipped_config_loads():
    from pipeline.config import PACKAGE_CONFIG_DIR

    names = sorted(p.stem for p in PACKAGE_CONFIG_DIR.glob("*.yaml"))
    assert "demo" in names
    for n in names:
        load_config(n)


def test_override_with_unparsable_value_names_the_key():
    with pytest.raises(ConfigError, match="panel.end"):
        load_config(None, ["panel.end=2019-13-01"])
    assert load_config(None, ["panel.end=2019-06-30"]).panel.end == "2019-06-30"


def test_exponent_floats_without_a_dot_are_numbers(tmp_path):
    # YAML 1.1 (PyYAML) reads 1e-4 as a string; a float field must still take it.
    assert load_config(write(tmp_path, "train: {lr: 1e-4}\n")).train.lr == 1e-4
    assert load_config(None, ["train.lr=3e-5"]).train.lr == 3e-5
    with pytest.raises(ConfigError, match="train.lr"):
        load_config(None, ["train.lr=fast"])


def test_a_duplicate_key_is_refused_with_its_lines(tmp_path):
    p = tmp_path / "dup.yaml"
    p.write_text("name: x\ntrain:\n  lr: 1e-4\n  epochs: 3\n  lr: 1e-3\n")
    with pytest.raises(ConfigError, match=r"dup.yaml, line 5, column 3: not valid YAML: duplicate key 'lr' \(first at line 3\)"):
        load_config(p)
    p.write_text("name: x\nname: y\n")
    with pytest.raises(ConfigError, match="duplicate key 'name'"):
        load_config(p)
    p.write_text("name: x\ntrain: {lr: 1.0e-4}\nevaluate: {weights: [ew]}\n")  # no repeat: fine
    assert load_config(p).train.lr == 1e-4


def test_cli_one_line_for_input_errors_traceback_for_bugs(capsys):
    from pipeline.cli import run_stage
    from pipeline.errors import InputError

    def user_error(cfg, args):
        raise InputError("data/x/panel is missing: run `make panel` first")

    def bug(cfg, args):
        raise ValueError("operands could not be broadcast together")  # numpy deep inside

    with pytest.raises(SystemExit) as e:
        run_stage("t", user_error, argv=[])
    assert e.value.code == 2
    assert capsys.readouterr().err.strip() == "error: data/x/panel is missing: run `make panel` first"
    with pytest.raises(ValueError, match="broadcast"):  # not turned into a user error
        run_stage("t", bug, argv=[])


# --------------------------------------------------------------------------------------------------
# Choices: Literal[...] annotations are the one statement of a field's allowed values


def literal_fields() -> list[tuple[str, tuple]]:
    """("section.key", choices) of every Literal field (inside list[...] too) of every section."""
    import dataclasses
    import typing

    out = []

    def walk(cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            tp = hints[f.name]
            if dataclasses.is_dataclass(tp):
                walk(tp, f"{prefix}{f.name}.")
                continue
            if typing.get_origin(tp) is list:
                tp = typing.get_args(tp)[0]
            if typing.get_origin(tp) is typing.Literal:
                out.append((f"{prefix}{f.name}", typing.get_args(tp)))

    walk(Config, "")
    return out


def test_literal_fields_cover_the_choices_and_their_defaults_are_choices():
    fields = dict(literal_fields())
    assert fields["panel.source"] == ("synthetic", "stooq", "crsp", "yahoo", "generic")
    assert fields["train.horizon"] == (5, 20, 60)
    assert {"synthetic.calendar", "generic.date_format", "transfer.mode", "images.executor",
            "train.calibration", "recovery.calibration", "gradcam.layer_point", "interpret.members",
            "evaluate.weights", "interpret.methods"} <= set(fields)
    assert len(fields) >= 24
    load_config()  # every default passes validation, so each default is one of its choices


def test_other_statements_of_the_choices_agree_with_the_annotations():
    from pipeline.config import HORIZON_FREQUENCY, INTERPRET_METHODS, REGRESSION_TARGETS

    fields = dict(literal_fields())
    assert set(fields["train.horizon"]) == set(HORIZON_FREQUENCY)
    assert fields["train.target"] == ("class", *REGRESSION_TARGETS)
    assert fields["interpret.methods"] == INTERPRET_METHODS


@pytest.mark.parametrize("dotted, choices", literal_fields())
def test_every_literal_field_refuses_other_values_naming_the_override(dotted, choices):
    bad = 7 if isinstance(choices[0], int) else "not-a-choice"
    value = f"[{bad}]" if dotted in ("evaluate.weights", "interpret.methods") else str(bad)
    override = f"{dotted}={value}"
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    key = f"'{dotted}'[0]" if value.startswith("[") else f"'{dotted}'"
    assert str(e.value) == f"override '{override}': {key} is {bad!r}; choose one of {list(choices)}"


def test_a_bad_choice_names_the_file_and_a_choice_is_read_by_its_type(tmp_path):
    p = write(tmp_path, "panel: {source: bloomberg}\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert str(e.value) == (f"{p}: 'panel.source' is 'bloomberg'; choose one of "
                            "['synthetic', 'stooq', 'crsp', 'yahoo', 'generic']")
    assert load_config(None, ["train.horizon=5", "train.image_set=I20/week"]).train.horizon == 5
    for text in ('train: {horizon: "20"}\n', "train: {horizon: true}\n", "train: {horizon: 20.0}\n"):
        with pytest.raises(ConfigError, match="'train.horizon': expected an integer"):
            load_config(write(tmp_path, text))


def test_validate_checks_choices_set_in_code():
    from pipeline.config import validate

    cfg = load_config()
    cfg.train.split = "weekly"
    with pytest.raises(ConfigError, match=r"^'train.split' is 'weekly'; choose one of \['ssrn', 'jf', 'custom'\]$"):
        validate(cfg)
    cfg = load_config()
    cfg.train.horizon = 20.0  # equal to 20 but not the integer choice
    with pytest.raises(ConfigError, match=r"'train.horizon' is 20.0"):
        validate(cfg)
    cfg = load_config()
    cfg.evaluate.weights = ["ew", "cap"]
    with pytest.raises(ConfigError, match=r"'evaluate.weights'\[1\] is 'cap'; choose one of \['ew', 'vw'\]"):
        validate(cfg)
    cfg = load_config()
    cfg.generic.columns.ticker = "symbol"  # nested sections are walked (no Literal there: fine)
    validate(cfg)


# Settings hashes that mark finished artifacts, for the default config (computed before the choices
# became Literal annotations): a change here redoes every user's panels, runs and evaluations.
# A new setting keeps them by staying out of the hash at its default (HASH_NEUTRAL_DEFAULTS).
DEFAULT_HASHES = {"synthetic": "a11bff23d1f7708c", "panel": "d59bb99ca4c916f2",
                  "train": "bf98278122b03747", "evaluate": "fbddc4fd21d94f03",
                  "gradcam": "dd4b09c2a8b00ead", "interpret": "f895d1907221923f"}  # interpret: class_model_lr 8


def test_default_settings_hashes_are_stable():
    cfg = load_config()
    assert {k: section_hash(getattr(cfg, k)) for k in DEFAULT_HASHES} == DEFAULT_HASHES


# --------------------------------------------------------------------------------------------------
# Checks that need only the config run when it loads


@pytest.mark.parametrize("override, message", [
    ("panel.end=end of 2019", "panel.end = 'end of 2019' is not a date (use YYYY-MM-DD)"),
    ("synthetic.start=''", "synthetic.start = '' is not a date (use YYYY-MM-DD)"),
    ("panel.start=2020-06-01", "'panel.start' 2020-06-01 is after 'panel.end' 2019-12-31"),
    ("ablations.ensemble=0", "'ablations.ensemble' must be >= 1, got 0"),
    ("ablations.max_train_images=5", "'ablations.max_train_images' must be >= 10, got 5"),
    ("ablations.test_years=[1999, 2005]", "'ablations.test_years' must be [first, last] within the "
                                          "test years [2000, 2019] of split ssrn, got [1999, 2005]"),
    ("recovery.pool_sizes=[5000, 9]", "'recovery.pool_sizes' must list sizes >= 10, got [5000, 9]"),
    ("recovery.recipes=[]", "'recovery.recipes' is empty"),
    ("recovery.recipes=[fast, magic]", "'recovery.recipes' has unknown recipe(s) ['magic']"),
])
def test_config_only_checks_run_at_load(override, message):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert message in str(e.value)


def test_derive_makes_a_checked_copy_and_leaves_the_original():
    from pipeline.config import derive

    cfg = load_config()
    v = derive(cfg, {"train.model": "I5", "train.lr": "1e-4", "data_dir": "elsewhere"})
    assert (v.train.model, v.train.lr, v.data_dir) == ("I5", 1e-4, "elsewhere")  # "1e-4" read as a number
    assert (cfg.train.model, cfg.train.lr, cfg.data_dir) == (Config().train.model, Config().train.lr, "data")
    assert v.train is not cfg.train and v.images.sets is not cfg.images.sets
    with pytest.raises(ConfigError, match="unknown config key 'train.modle'"):
        derive(cfg, {"train.modle": "I5"})
    with pytest.raises(ConfigError, match="train.calibration"):  # validated like a loaded file
        derive(cfg, {"train.target": "return", "train.calibration": "platt"})
