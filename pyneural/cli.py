"""The ``pyneural`` command line: ``pyneural <command> [options]``.

Each command lives in its own module under ``pyneural/commands/`` and exposes
``register(subparsers)``, which adds its sub-parser and sets ``handler`` (a function of the parsed
arguments returning an exit status). Adding a command is one new module and one entry in
``COMMANDS``; nothing else here changes. Commands import what only they need (datasets,
scikit-learn, tqdm) inside their handler, so one command's dependencies never slow another.
"""
import argparse
import importlib
import sys

COMMANDS = ("train", "doctor", "recsys")


def build_parser():
    parser = argparse.ArgumentParser(prog="pyneural", description="pyneural: a small deep-learning library "
                                                                  "built on hand-written kernels")
    from . import __version__
    parser.add_argument("--version", action="version", version=f"pyneural {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"pyneural.commands.{name}").register(subparsers)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    if hasattr(args, "check"):
        args.check(parser, args)
    try:
        return args.handler(args) or 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
