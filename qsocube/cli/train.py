"""``qsocube train``: search lambda, train, export ONNX and write codes back into a cube.

Budgets default to a profile's (``--profile``); ``--calls`` and ``--max-epochs`` override.
Rerunning resumes: finished calls are replayed from ``--state-dir`` and latent sizes
already written with the same budget are skipped. ``--processes`` trains search calls side
by side on local processes; ``--scheduler`` or ``--workers`` on a Dask cluster (the
``scale`` extra), with the same results.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from qsocube.cli import options
from qsocube.core import defaults, layout
from qsocube.core.errors import UsageError


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("cube", type=Path, help="the cube to train on (written back in place)")
    table = defaults.training_budgets()
    parser.add_argument("--profile", choices=sorted(table), default=defaults.DEFAULT_PROFILE,
                        help="budget defaults (qsocube/core/profiles.toml): " + "; ".join(
                            f"{k}: {v['n_calls']} calls x {v['max_epochs']} epochs, batch "
                            f"{v['batch_size']}, seed {v['seed']}" for k, v in table.items()))
    parser.add_argument("--calls", type=options.integer(1), help="search calls per latent size")
    parser.add_argument("--max-epochs", type=options.integer(1),
                        help="epoch cap per call (early stopping)")
    parser.add_argument("--batch-size", type=options.integer(2),
                        help=f"training batch size (default {defaults.TRAIN_BATCH_SIZE})")
    parser.add_argument("--latent-sizes", type=_int_list, default=defaults.LATENT_SIZES,
                        help="comma-separated latent sizes (default "
                             f"{','.join(map(str, defaults.LATENT_SIZES))})")
    parser.add_argument("--hidden", type=_int_list, default=defaults.HIDDEN,
                        help="encoder hidden layer sizes, mirrored in the decoder")
    parser.add_argument("--dropout", type=options.number(0, 1, high_open=True),
                        default=None,
                        help="dropout of the encoder's hidden layers (default: the "
                             "profile's)")
    parser.add_argument("--decoder-dropout", type=options.number(0, 1, high_open=True),
                        default=None,
                        help="dropout of the decoder's hidden layers (default: the "
                             "profile's, 0)")
    parser.add_argument("--seed", type=options.integer(0),
                        help="random seed (default: the profile's)")
    parser.add_argument("--processes", type=options.integer(1), default=None, metavar="N",
                        help="local processes training search calls side by side (default: "
                             "up to 2; 1 = in this process)")
    options.add_cluster(parser, "train the search calls")
    parser.add_argument("--parallel-calls", type=options.integer(1), default=1, metavar="K",
                        help="lambdas asked and trained at once per latent size (skopt "
                             "constant liar, cl_min). K > 1 changes which lambdas are tried, "
                             "so results differ from K = 1 by design; resuming still replays "
                             "every recorded call in order (default 1)")
    parser.add_argument("--models-dir", type=Path, default=None,
                        help="where the ONNX files go (default: models/ beside the cube)")
    parser.add_argument("--state-dir", type=Path, default=None,
                        help="resumable search state (default: .state/ beside the cube)")


def run(args: argparse.Namespace) -> int:
    budget = {"seed": 0, "batch_size": defaults.TRAIN_BATCH_SIZE,
              **defaults.training_budgets()[args.profile]}
    for key, value in (("n_calls", args.calls), ("max_epochs", args.max_epochs),
                       ("batch_size", args.batch_size), ("seed", args.seed),
                       ("dropout", args.dropout), ("decoder_dropout", args.decoder_dropout)):
        if value is not None:
            budget[key] = value
    if budget["n_calls"] < 1 or budget["max_epochs"] < 1 or budget["batch_size"] < 2:
        raise UsageError("--calls and --max-epochs must be >= 1, --batch-size >= 2")
    from qsocube.core.cluster import require_dask, wants_dask

    if wants_dask(args.scheduler, args.workers):
        require_dask("--scheduler" if args.scheduler else "--workers")
    if not args.cube.is_file():
        raise UsageError(f"{args.cube}: no such cube")
    from qsocube.builder.train.pipeline import train_release

    release = layout.Release(args.cube.resolve().parent)
    train_release(args.cube, args.models_dir or release.models, args.state_dir or release.state,
                  latent_sizes=args.latent_sizes, n_calls=budget["n_calls"],
                  max_epochs=budget["max_epochs"], batch_size=budget["batch_size"],
                  seed=budget["seed"], hidden=args.hidden, processes=args.processes,
                  dropout=budget["dropout"], decoder_dropout=budget.get("decoder_dropout"),
                  scheduler=args.scheduler, workers=args.workers,
                  parallel_calls=args.parallel_calls)
    return 0
