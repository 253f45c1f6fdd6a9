"""Configs as Python files with `file.py:key=val` arguments and --config.a.b overrides."""

import pytest

from hetclip.config import apply_overrides, load_config, parse_config_arg


def test_parse_config_arg_literals_strings_flags_and_brackets():
    arg = parse_config_arg("batch=64,lr=1e-3,name=vit,flag,shape=(2,3)")
    assert arg.batch == 64 and arg.lr == 0.001 and arg.name == "vit" and arg.flag is True
    assert arg.shape == (2, 3)


def test_shipped_config_by_name_with_arguments():
    config = load_config("default.py:batch=32,res=48")
    assert config.input.batch_size == 32
    assert "inception_crop(48" in config.input.pp
    assert load_config("default").input.batch_size == 256


def test_overrides_keep_types_and_reject_unknown_keys_with_a_suggestion():
    config = load_config("default.py")
    apply_overrides(config, ["input.batch_size=8", "input.data.split=validation", "seed=3"])
    assert config.input.batch_size == 8 and config.input.data.split == "validation"
    assert config.seed == 3
    with pytest.raises(KeyError, match="Did you mean 'input.batch_size'"):
        apply_overrides(config, ["input.batch_sise=8"])
    with pytest.raises(ValueError, match="Cannot set 'input.batch_size'"):
        apply_overrides(config, ["input.batch_size=big"])
    with pytest.raises(ValueError, match="is a section"):
        apply_overrides(config, ["input=3"])
    with pytest.raises(ValueError, match="key.path=value"):
        apply_overrides(config, ["seed"])


def test_config_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="Shipped configs"):
        load_config("nope.py")
    (tmp_path / "plain.py").write_text("def get_config():\n    return {'a': 1}\n")
    assert load_config(str(tmp_path / "plain.py")).a == 1
    with pytest.raises(ValueError, match="takes no arguments"):
        load_config(f"{tmp_path / 'plain.py'}:x=1")
    (tmp_path / "empty.py").write_text("x = 1\n")
    with pytest.raises(ValueError, match="no get_config"):
        load_config(str(tmp_path / "empty.py"))
