"""Shared options: --model, --tile, --device and --preset mean the same in every command."""

import click
import pytest

from srgan.cli import main
from srgan.degrade import PRESETS

SHARED = ("model", "tile", "device", "preset")


def _options(name):
    """{option name: click.Option} of every command that has it."""
    found = {}
    for command in main.commands.values():
        for param in command.params:
            if param.name == name:
                found[command.name] = param
    return found


@pytest.mark.parametrize("name", SHARED)
def test_same_type_and_help_in_every_command(name):
    found = _options(name)
    assert len(found) >= 2, found  # shared by at least two commands
    first = next(iter(found.values()))
    for command, option in found.items():
        assert repr(option.type) == repr(first.type), command
        assert option.default == first.default and option.opts == first.opts, command
        # the help may only add the command's own "[default: ...]"
        assert option.help.split("  [default:")[0] == first.help.split("  [default:")[0], command


def test_where_the_shared_options_are():
    assert set(_options("tile")) == {"upscale", "eval"}
    assert set(_options("model")) == {"upscale", "eval"}
    assert set(_options("preset")) == {"eval", "train"}
    assert set(_options("device")) == {"upscale", "eval", "train"}
    for option in _options("preset").values():
        assert isinstance(option.type, click.Choice) and tuple(option.type.choices) == tuple(PRESETS)
    for option in _options("tile").values():
        assert isinstance(option.type, click.IntRange) and option.type.min == 0
