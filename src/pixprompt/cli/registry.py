"""The sub-commands' registry: each command module registers its arguments and handler with `command`."""
from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS: dict[str, Command] = {}


def command(name: str, help: str, add_arguments: Callable[[argparse.ArgumentParser], None]):
    """Register a sub-command's handler under `name`."""
    def register(run: Callable[[argparse.Namespace], int]):
        COMMANDS[name] = Command(help, add_arguments, run)
        return run
    return register


#: The command modules under `pixprompt.cli.commands`, in the order `pixprompt --help` lists them.
COMMAND_MODULES = ("models", "classify", "datasets", "evaluate", "baseline", "probe", "select_templates", "bench",
                   "report", "compare", "serve")


def registered() -> dict[str, Command]:
    """Every command, its module imported (each registers itself on import; none imports torch at the top)."""
    for module in COMMAND_MODULES:
        importlib.import_module(f"pixprompt.cli.commands.{module}")
    return COMMANDS
