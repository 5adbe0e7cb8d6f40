"""`pixprompt serve`: its arguments and its handler."""
from __future__ import annotations

import argparse
import sys

from pixprompt.cli.options import (
    add_cache_options,
    add_model_options,
    cache_from_args,
    calibration_from_args,
    decoded_as_asked,
    model_from_args,
    port_number,
    positive_int,
)
from pixprompt.cli.registry import command
from pixprompt.errors import UsageError


def _serve_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_options(parser)
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: this machine only)")
    parser.add_argument("--port", type=port_number, default=7860)
    parser.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                        help="also answer requests addressed to this host name (repeatable); others are refused")
    parser.add_argument("--max-upload-mb", type=positive_int, default=10, help="largest image accepted (default 10 MB)")
    parser.add_argument("--max-prompts", type=positive_int, default=2000,
                        help="class names × templates per request (default 2000)")
    group = parser.add_argument_group("probabilities")
    group.add_argument("--calibrate", metavar="VALSET",
                       help="show temperature-scaled probabilities, the temperature fitted on this dataset spec "
                            "(its own classes and default templates) at start-up")
    group.add_argument("--calibrate-data-dir", metavar="DIR", help="--data-dir of the --calibrate dataset")
    add_cache_options(group)


def check_port_free(host: str, port: int) -> None:
    """Refuse a port that is taken or not ours to bind, before the model loads."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, port))
        except OSError as error:
            raise UsageError(f"cannot listen on {host}:{port} ({error.strerror or error}): "
                             "choose another --port or --host") from None


@command("serve", "a local web page to try class names and templates on your images", _serve_arguments)
def run_serve(args: argparse.Namespace) -> int:
    from pixprompt.web.app import serve

    check_port_free(args.host, args.port)
    calibration = calibration_from_args(args)
    model = model_from_args(args)
    temperature = 1.0
    if calibration:
        from pixprompt.evaluation.calibration import temperature_on
        from pixprompt.features.cache import extract_features
        from pixprompt.prompts import resolve_templates

        calibration = decoded_as_asked(args, calibration, model)
        features = extract_features(model, calibration, cache_from_args(args), args.batch_size, args.workers)
        temperature = temperature_on(model, calibration, features,
                                     resolve_templates(calibration.default_templates)[0], cache_from_args(args))
        print(f"pixprompt: probabilities at temperature {temperature:.4g} (fitted on {calibration.name})",
              file=sys.stderr)
    print(f"pixprompt: serving {model.info.label} on http://{args.host}:{args.port} (Ctrl-C stops)",
          file=sys.stderr)
    serve(model, args.host, args.port, args.max_upload_mb, args.allow_host, args.max_prompts, args.max_pixels,
          temperature)
    return 0
