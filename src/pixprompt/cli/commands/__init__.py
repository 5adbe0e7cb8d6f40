"""One module per sub-command, each registering itself with `pixprompt.cli.registry.command`."""
