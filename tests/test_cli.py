"""The shared command line: --set overrides and the --model shorthand."""

from pipeline import paths
from pipeline.cli import model_option, parse_args


def test_model_is_a_shorthand_for_the_train_model_override(tmp_path) -> None:
    argv = ["--config", "demo", "--set", f"data_dir={tmp_path}", "--model", "I20-nobn"]
    cfg, args = parse_args("t", argv, extra=model_option)
    assert args.model == "I20-nobn" and cfg.train.model == "I20-nobn"
    assert paths.run_dir(cfg).name.startswith("I20-nobn_R20")
    # --model wins over a --set of the same key (it is applied after the other overrides)
    cfg2, _ = parse_args("t", [*argv, "--set", "train.model=I20"], extra=model_option)
    assert cfg2.train.model == "I20-nobn"
    cfg3, _ = parse_args("t", ["--config", "demo", "--set", f"data_dir={tmp_path}"], extra=model_option)
    assert cfg3.train.model == "I20"
