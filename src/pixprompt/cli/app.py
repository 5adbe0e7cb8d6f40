"""The `pixprompt` entry point: the parser built from every registered command, logging, and the error handling that
turns failures into one line and an exit code."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from pixprompt import progress
from pixprompt.cli.registry import registered
from pixprompt.errors import PixpromptError


# -- entry point ----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from pixprompt import __version__

    parser = argparse.ArgumentParser(prog="pixprompt", description="Zero-shot image classification with "
                                     "CLIP-like vision-language models.")
    parser.add_argument("--version", action="version", version=f"pixprompt {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    verbosity = common.add_mutually_exclusive_group()
    verbosity.add_argument("--quiet", "-q", action="store_true", help="no progress bars, errors only")
    verbosity.add_argument("--verbose", "-v", action="store_true", help="more detail on stderr")
    common.add_argument("--debug", action="store_true", help="show tracebacks")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, spec in registered().items():
        sub = subparsers.add_parser(name, help=spec.help, description=spec.help, parents=[common])
        spec.add_arguments(sub)
        sub.set_defaults(run=spec.run)
    return parser


def configure_logging(args: argparse.Namespace, ranks=None) -> None:
    """Logs go to stderr so that stdout carries only results; libraries are kept quiet unless --debug.

    Ranks other than 0 of a multi-process job show errors only (rank 0 speaks for the job) and no progress.
    """
    quiet = args.quiet or (ranks is not None and not ranks.is_main)
    level = logging.ERROR if quiet else logging.DEBUG if args.debug else \
        logging.INFO if args.verbose else logging.WARNING
    tag = _rank_tag(ranks) if ranks is not None else ""
    logging.basicConfig(level=level, format=f"pixprompt{tag}: %(levelname)s: %(message)s", stream=sys.stderr,
                        force=True)
    # libraries' warnings (Pillow's EXIF and bomb warnings, DataLoader's) obey --quiet like pixprompt's own
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").setLevel(level)
    if not args.debug:
        for noisy in ("root", "open_clip", "transformers", "huggingface_hub", "timm", "urllib3", "httpx"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
        # libraries log to the root logger (open_clip logs a failed download as an error before raising);
        # pixprompt reports such failures itself, in one line
        logging.getLogger().setLevel(logging.CRITICAL)
        logging.getLogger("pixprompt").setLevel(level)
        # transformers reads its verbosity when first imported, which only loading a model does
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        if quiet:  # otherwise weight downloads and loading keep their progress bars
            os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    progress.ENABLED = not quiet


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 1 some inputs failed, 2 usage, 3 model/data unavailable).

    Under torchrun, srun or mpirun with several processes, every rank runs the same command: rank 0
    prints the results, the others print nothing on stdout and only their own errors on stderr.
    """
    from pixprompt import distributed

    parser = build_parser()
    args = parser.parse_args(argv)
    ranks = distributed.Ranks()
    try:
        ranks = distributed.discover()
        configure_logging(args, ranks)
        if ranks.world > 1:
            distributed.start(ranks)
        distributed.check_settings(ranks)
        if ranks.world > 1:
            distributed.agree(command_facts(args), ranks)
        if not ranks.is_main:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (for the life of the process)
        return args.run(args)
    except PixpromptError as error:
        if args.debug:
            raise
        if not isinstance(error, distributed.JobStopped) or ranks.is_main:  # rank 0 speaks for the job
            print(f"pixprompt{_rank_tag(ranks)}: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("pixprompt: interrupted", file=sys.stderr)  # what was kept, if anything, is said where it was
        return 130
    except Exception as error:  # never a traceback for users; --debug shows it
        if args.debug:
            raise
        print(f"pixprompt{_rank_tag(ranks)}: error: {type(error).__name__}: {error} (run again with --debug for "
              "details)", file=sys.stderr)
        return 1
    finally:
        distributed.stop()


#: Options that name files whose content, not only their name, shapes the results (it may differ from node to node).
_FILE_OPTIONS = ("labels_file", "class_map", "hierarchy", "config", "templates", "descriptions")


def command_facts(args: argparse.Namespace) -> dict[str, str]:
    """What the ranks of a job must agree on before any work: every option as given, and the content of each file
    an option names (by a digest)."""
    import hashlib

    from pixprompt.readers import read_bytes

    facts = {f"--{name.replace('_', '-')}": str(value) for name, value in sorted(vars(args).items())
             if name != "run"}
    for name in _FILE_OPTIONS:
        for part in str(getattr(args, name, None) or "").split(","):
            path = Path(part.strip().removeprefix("dclip:")).expanduser()
            if part.strip() and path.is_file():
                try:
                    facts[f"content of {path}"] = hashlib.sha256(read_bytes(path, "file")).hexdigest()[:20]
                except PixpromptError:  # the command itself says what is wrong with it
                    facts[f"content of {path}"] = "unreadable"
    return facts


def _rank_tag(ranks) -> str:
    """` [rank 1/4]` in messages of a multi-process job, nothing otherwise."""
    return f" [rank {ranks.rank}/{ranks.world}]" if ranks.world > 1 else ""
