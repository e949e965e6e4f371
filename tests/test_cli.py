"""The CLI surface: every command has help; bad configuration gives one line and its exit code."""
from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from matcher import config
from matcher.cli import cli
from matcher.errors import ConfigError


def _commands(group: click.Group, prefix=()):
    for name, cmd in group.commands.items():
        yield prefix + (name,), cmd
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, prefix + (name,))


@pytest.mark.parametrize("path", [p for p, _ in _commands(cli)], ids=lambda p: " ".join(p))
def test_every_command_has_help(path):
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    cmd = cli
    for part in path:
        cmd = cmd.commands[part]
    assert cmd.help and len(cmd.help.strip()) > 10
    assert "Usage:" in result.output


def test_invalid_config_file_is_one_line_exit_3(tmp_path):
    bad = tmp_path / "matcher.toml"
    bad.write_text("[run]\nbatch_size = 'many'\n")
    result = CliRunner().invoke(cli, ["--config", str(bad), "run"])
    assert result.exit_code == 3
    assert "run.batch_size" in result.output


def test_config_rejects_rule_without_identifier():
    data = config._defaults()
    data["rules"] = [{"name": "names_only", "when": {"name": ["exact"]}, "min_score": 0, "confidence": "low"}]
    with pytest.raises(ConfigError, match="must require agreement on phone, document or email"):
        config.build(data, "test")


def test_config_rejects_unknown_level_and_bad_toml(tmp_path):
    data = config._defaults()
    data["rules"][0]["when"] = {"phone": ["sorta"]}
    with pytest.raises(ConfigError, match="unknown levels"):
        config.build(data, "test")
    broken = tmp_path / "x.toml"
    broken.write_text("[run\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load(broken)


def test_user_rules_replace_defaults(tmp_path):
    f = tmp_path / "m.toml"
    f.write_text('[[rules]]\nname = "doc_only"\nwhen = { document = ["exact"] }\nmin_score = 0\nconfidence = "high"\n')
    cfg = config.load(f)
    assert [r.name for r in cfg.rules] == ["doc_only"]
    assert cfg.batch_size == config.load().batch_size  # other keys keep their defaults
