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
