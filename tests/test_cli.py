"""`clusterloss train` argument handling (in-process; the SIGTERM test in test_train.py runs it for real)."""

import pytest

from clusterloss.cli import COMMAND_MODULES, build_parser, main


def test_train_is_registered_and_needs_a_config_or_a_run_to_resume(capsys):
    assert "clusterloss.train_cli" in COMMAND_MODULES
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train"])
    args = build_parser().parse_args(["train", "--config", "c.yaml", "--set", "train.epochs=3", "--set",
                                      "train.lr=0.1", "--init-from", "x.pt"])
    assert args.overrides == ["train.epochs=3", "train.lr=0.1"] and args.init_from == "x.pt"


def test_unknown_key_is_a_one_line_error_naming_the_closest_key(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("train:\n  epochs: 1\n")
    assert main(["train", "--config", str(config), "--run-dir", str(tmp_path / "run"), "--set",
                 "train.epoch=3"]) == 1
    assert "did you mean 'train.epochs'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_resume_of_a_missing_run_and_init_from_with_resume_are_errors(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path / "nothing")]) == 1
    assert "cannot resume" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path), "--init-from", "x.pt"]) == 2
