"""``qsocube train``: search lambda, train, export ONNX and write codes back into a cube.

Budgets default to a profile's (``--profile``); ``--calls`` and ``--max-epochs`` override.
Rerunning resumes: finished calls are replayed from ``--state-dir`` and latent sizes
already written with the same budget are skipped. ``--scheduler`` trains the search calls
on a Dask cluster (the ``scale`` extra) with the same results as the local processes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from builder.train import LATENT_SIZES, profiles


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
    table = profiles()
    parser.add_argument("--profile", choices=sorted(table), default="default",
                        help="budget defaults (qsocube/profiles.toml): " + "; ".join(
                            f"{k}: {v['n_calls']} calls x {v['max_epochs']} epochs, batch "
                            f"{v['batch_size']}, seed {v['seed']}" for k, v in table.items()))
    parser.add_argument("--calls", type=int, help="search calls per latent size")
    parser.add_argument("--max-epochs", type=int, help="epoch cap per call (early stopping)")
    parser.add_argument("--batch-size", type=int, help="training batch size (default 256)")
    parser.add_argument("--latent-sizes", type=_int_list, default=LATENT_SIZES,
                        help="comma-separated latent sizes (default 3,6,9,12,15)")
    parser.add_argument("--hidden", type=_int_list, default=(256, 128),
                        help="encoder hidden layer sizes, mirrored in the decoder")
    parser.add_argument("--decoder-dropout", type=float, default=None,
                        help="dropout of the decoder's hidden layers (default: the "
                             "profile's, 0)")
    parser.add_argument("--seed", type=int, help="random seed (default: the profile's)")
    parser.add_argument("--workers", type=int, default=None,
                        help="processes training search calls side by side (default: 2 "
                             "cores); with --scheduler local, the LocalCluster's workers")
    parser.add_argument("--scheduler", default=None, metavar="ADDRESS",
                        help="train the search calls on the Dask cluster at ADDRESS (e.g. "
                             "tcp://10.0.0.5:8786), or 'local' for a LocalCluster of "
                             "--workers processes; workers must see the cube at the same "
                             "path. Same results as without (needs the scale extra)")
    parser.add_argument("--parallel-calls", type=int, default=1, metavar="K",
                        help="lambdas asked and trained at once per latent size (skopt "
                             "constant liar, cl_min). K > 1 changes which lambdas are tried, "
                             "so results differ from K = 1 by design; resuming still replays "
                             "every recorded call in order (default 1)")
    parser.add_argument("--models-dir", type=Path, default=None,
                        help="where the ONNX files go (default: models/ beside the cube)")
    parser.add_argument("--state-dir", type=Path, default=None,
                        help="resumable search state (default: .state/ beside the cube)")


def run(args: argparse.Namespace) -> int:
    from qsocube.cli import UsageError

    budget = {"seed": 0, "batch_size": 256, **profiles()[args.profile]}
    for key, value in (("n_calls", args.calls), ("max_epochs", args.max_epochs),
                       ("batch_size", args.batch_size), ("seed", args.seed)):
        if value is not None:
            budget[key] = value
    if budget["n_calls"] < 1 or budget["max_epochs"] < 1 or budget["batch_size"] < 2:
        raise UsageError("--calls and --max-epochs must be >= 1, --batch-size >= 2")
    if args.decoder_dropout is not None and not 0 <= args.decoder_dropout < 1:
        raise UsageError("--decoder-dropout must be in [0, 1)")
    if args.workers is not None and args.workers < 1:
        raise UsageError("--workers must be >= 1")
    if args.parallel_calls < 1:
        raise UsageError("--parallel-calls must be >= 1")
    if args.scheduler:
        try:
            import distributed  # noqa: F401
        except ImportError:
            raise UsageError("--scheduler needs dask: pip install 'qsocube[scale]'") from None
    if not args.cube.is_file():
        raise UsageError(f"{args.cube}: no such cube")
    from builder.train.data import CubeError
    from builder.train.pipeline import train_release

    folder = args.cube.resolve().parent
    try:
        train_release(args.cube, args.models_dir or folder / "models",
                      args.state_dir or folder / ".state", latent_sizes=args.latent_sizes,
                      n_calls=budget["n_calls"], max_epochs=budget["max_epochs"],
                      batch_size=budget["batch_size"], seed=budget["seed"], hidden=args.hidden,
                      workers=args.workers,
                      decoder_dropout=(args.decoder_dropout if args.decoder_dropout is not None
                                       else budget.get("decoder_dropout")),
                      scheduler=args.scheduler, parallel_calls=args.parallel_calls)
    except (CubeError, ConnectionError) as exc:  # bad input or address: one line
        raise UsageError(str(exc)) from None
    return 0
