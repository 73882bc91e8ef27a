"""What the training CLIs share: one-line errors for bad input, torch threads and seed, the
command line recorded in ``result.json``."""
from __future__ import annotations

import argparse
import pickle
import sys
from typing import Callable

import torch

__all__ = ["run_cli", "add_run_args", "configure_torch", "command_line"]

CLI_ERRORS = (FileNotFoundError, ValueError, KeyError, pickle.UnpicklingError)


def run_cli(run: Callable[[], int]) -> int:
    """Run a CLI's body; bad data, flags or checkpoints end it with one ``error:`` line (exit 2)."""
    try:
        return run()
    except CLI_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def add_run_args(parser: argparse.ArgumentParser, flip: bool = True, resume: bool = True) -> None:
    """The options every training run has: data subsets, threads, seed (and flips, resuming)."""
    if flip:
        parser.add_argument("--no-flip", action="store_true", help="no horizontal flips (traffic signs)")
    parser.add_argument("--train-limit", type=int, default=0, help="use a subset of the training set")
    parser.add_argument("--test-limit", type=int, default=0, help="use a subset of the test set")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--seed", type=int, default=0)
    if resume:
        parser.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")


def configure_torch(threads: int, seed: int) -> None:
    """``threads`` CPU threads (0: torch's default) and the global seed."""
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)


def command_line(module: str, argv: list[str] | None) -> str:
    """How the CLI was called: ``python -m <module> <arguments>``."""
    return f"python -m {module} " + " ".join(sys.argv[1:] if argv is None else argv)
