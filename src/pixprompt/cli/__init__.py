"""The `pixprompt` command: one sub-command per module in `commands/`, registered in `registry.COMMANDS`; shared
options in `options`, outputs in `output`, the entry point in `app`."""
from pixprompt.cli.app import main

__all__ = ["main"]
