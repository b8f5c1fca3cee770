"""The command line every benchmark script shares: its parser, ``--json`` and ``--smoke``, its device.

Each script keeps its own options (sizes, models, levers) and calls these for the rest, so
that ``--help`` prints the script's docstring the same way everywhere, ``--json FILE`` writes
the record and ``--smoke`` is the seconds-long run tests/test_benchmarks.py makes.
"""

from __future__ import annotations

import argparse


def parser(doc: str) -> argparse.ArgumentParser:
    """An argument parser whose ``--help`` is ``doc`` (the script's docstring) as written."""
    return argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def parse(p: argparse.ArgumentParser, argv, smoke: str, json: str = "also write the results as JSON"):
    """Add ``--json FILE`` (the results record, help ``json``) and ``--smoke`` (a tiny run, help
    ``smoke``) to the script's parser ``p``, then parse ``argv`` (None: the command line)."""
    p.add_argument("--json", default=None, metavar="FILE", help=json)
    p.add_argument("--smoke", action="store_true", help=smoke)
    return p.parse_args(argv)


def setup_device(args: argparse.Namespace):
    """Apply ``--threads`` where the script has it, then resolve ``--device`` (auto: CUDA if present).

    Returns the ``torch.device``. torch is imported here, not above, so that scripts which only
    launch measured subprocesses (photo_memory.py) stay light.
    """
    import torch

    from srgan.device import resolve_device

    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    return resolve_device(args.device)
