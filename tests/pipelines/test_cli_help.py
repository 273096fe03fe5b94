"""``anomaly-pipelines <command> --help``: what the command does, each option, the exit statuses."""

from __future__ import annotations

import argparse

import pytest

from pipelines.cli import EXIT_STATUS, build_parser, main

COMMANDS = sorted(next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices)


@pytest.mark.parametrize("command", COMMANDS)
def test_each_commands_help_says_what_it_does_each_option_and_the_exit_statuses(command, capsys):
    # `detect --help` listed options only: what a command does was shown in the list of commands alone.
    parser = build_parser()
    listing = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    said = next(choice.help for choice in listing._choices_actions if choice.dest == command)
    with pytest.raises(SystemExit) as stopped:
        main([command, "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert stopped.value.code == 0
    assert said[:1].upper() + said[1:] + "." in out
    assert " ".join(EXIT_STATUS.split()) in out
    undocumented = [a.option_strings for a in listing.choices[command]._actions if not a.help]
    assert undocumented == []


def test_the_exit_statuses_shown_are_the_ones_main_returns(capsys):
    assert "130 Ctrl-C" in EXIT_STATUS and "143 SIGTERM" in EXIT_STATUS and "141 the reader of stdout" in EXIT_STATUS
    assert main(["validate-config", "/nonexistent/job.yaml"]) == 1
    assert main(["train", "no_such_job"]) == 2
    capsys.readouterr()
