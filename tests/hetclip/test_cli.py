"""The `hetclip` command line: help, errors, and a pipeline inspected end to end."""

import subprocess
import sys

import pytest

from hetclip.cli import main


def test_console_entry_point_help_lists_the_commands():
    out = subprocess.run(
        [sys.executable, "-m", "hetclip.cli", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for command in ("data", "config", "train", "eval", "export", "plan-classes"):
        assert command in out
    data_help = subprocess.run(
        [sys.executable, "-m", "hetclip.cli", "data", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for command in ("prepare", "summary", "inspect", "train-tokenizer", "subset"):
        assert command in data_help


def test_unknown_override_key_is_an_error_naming_the_nearest(capsys):
    code = main(["config", "show", "--config", "default.py", "--config.input.batch_sise=3"])
    assert code == 2
    assert "Did you mean 'input.batch_size'" in capsys.readouterr().err


def test_config_show_applies_both_override_forms(capsys):
    assert (
        main(
            [
                "config",
                "show",
                "--config",
                "default.py:batch=16",
                "--config.seed",
                "7",
                "--config.input.shuffle=False",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert '"batch_size": 16' in out and '"seed": 7' in out and '"shuffle": false' in out


def test_inspect_runs_the_default_pipeline_on_prepared_data(
    prepared_imagetext, monkeypatch, capsys
):
    monkeypatch.setenv("HETCLIP_DATA_DIR", str(prepared_imagetext.parent))
    assert main(["data", "inspect", "--config", "default.py:batch=4,res=16", "--batches", "2"]) == 0
    out = capsys.readouterr().out
    assert "batch 1: {'image': 'float32[4, 16, 16, 3]', 'text': 'int32[4, 16]'}" in out
    assert "no records skipped" in out
    assert (
        main(
            [
                "data",
                "inspect",
                "--config",
                "default.py:batch=4,res=16",
                "--pp-key",
                "pp_eval",
                "--batches",
                "1",
                "--config.input.data.split=heldout",
            ]
        )
        == 0
    )
    assert "'_mask': 'bool[4]'" in capsys.readouterr().out


def test_inspect_without_prepared_data_says_how_to_prepare(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HETCLIP_DATA_DIR", str(tmp_path))
    assert main(["data", "inspect"]) == 2
    assert "hetclip data prepare --name imagetext" in capsys.readouterr().err


def test_override_without_value_is_rejected():
    with pytest.raises(SystemExit, match="needs a value"):
        main(["config", "show", "--config.seed"])
