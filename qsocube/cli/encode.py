"""``qsocube encode``: encode spectra with a release's ONNX encoder, no torch needed.

Exit codes: 0 every spectrum encoded, 1 some were rejected (their rows carry a Rejection
code in FLAG and a reason), 2 usage or model errors (one line on stderr, nothing written).
``--scheduler`` or ``--workers N`` spread the inputs over a Dask cluster
(``qsocube.inference.distributed``, the ``scale`` extra) with the same output.
"""

from __future__ import annotations

import argparse
import contextlib
import queue
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from qsocube import __version__
from qsocube.cli import options
from qsocube.core import defaults
from qsocube.core.atomic import remove_stale_partials
from qsocube.core.cluster import wants_dask
from qsocube.core.cube import file_sha256
from qsocube.core.errors import Rejection, UsageError
from qsocube.core.inputs import is_among
from qsocube.core.parallel import default_processes, processes_for
from qsocube.core.progress import Rate, say
from qsocube.inference.encoder import Encoded, Encoder
from qsocube.inference.inputs import discover
from qsocube.inference.sources import Batch, plan_parts, read_batches
from qsocube.inference.writers import check_output, open_writer

SHOWN_REJECTIONS = 5  # reasons printed on stderr; all of them are in the output rows


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="spec-lite FITS files, folders or globs of them; a qsocube cube "
                             "(.h5); or arrays on the model's grid (.h5 with flux and ivar, "
                             ".npy holding np.stack([flux, ivar]))")
    parser.add_argument("--model", required=True, type=Path,
                        help="RELEASE/models/infovae_latentNN_encoder.onnx (its decoder must "
                             "be beside it)")
    parser.add_argument("--out", required=True, type=Path,
                        help="output file: .h5 (default layout, opens with xarray), .fits "
                             "(binary table) or .csv")
    parser.add_argument("--batch-size", type=options.integer(1), default=defaults.BATCH_SIZE,
                        help="spectra per batch (and per Dask task); memory grows with it "
                             f"(default {defaults.BATCH_SIZE})")
    parser.add_argument("--threads", type=options.integer(1), default=None,
                        help="threads for the models and scores: onnxruntime's, and the "
                             "pieces a batch of 512 or more is scored in (default: the cores "
                             "available, at most 8; 1 per task on Dask workers)")
    options.add_processes(parser, "read and resample the inputs")
    parser.add_argument("--min-covered-fraction", type=options.fraction_type,
                        default=defaults.MIN_COVERED_FRACTION,
                        help="reject spectra covering less of the grid than this fraction "
                             f"(default {defaults.MIN_COVERED_FRACTION})")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    options.add_cluster(parser, "read, resample and encode")


class Tally:
    """Counts for the summary line."""

    def __init__(self) -> None:
        self.flags: Counter[int] = Counter()
        self.classes: Counter[str] = Counter()
        self.reasons: list[str] = []
        self.files = 0
        self.anomalous = 0
        self.masked = 0  # pixels masked by the value rule (qsocube.core.values)

    def add(self, part: Encoded, files: int) -> None:
        self.files += files
        self.flags.update(int(f) for f in part.flag)
        self.classes.update(str(c) for c in part.CLASS if str(c) and str(c) != "QSO")
        self.anomalous += int(np.sum(part.anomaly_score > 0.99))
        bad = np.flatnonzero(part.flag != Rejection.ok)
        for i in bad[:max(0, SHOWN_REJECTIONS - len(self.reasons))]:
            self.reasons.append(f"  rejected {part.source[i]}: {part.reason[i]} "
                                f"({Rejection(int(part.flag[i])).name})")

    @property
    def rejected(self) -> int:
        return sum(count for flag, count in self.flags.items() if flag != Rejection.ok)


def summary(tally: Tally, total: int, seconds: float, out: Path) -> str:
    rejected = tally.rejected
    parts = [f"encoded {total - rejected} of {total} spectra from {tally.files} input files "
             f"in {seconds:.1f} s ({total / max(seconds, 1e-9):,.0f} spectra/s)"]
    if rejected:
        kinds = ", ".join(f"{count} {Rejection(flag).name}"
                          for flag, count in sorted(tally.flags.items()) if flag != Rejection.ok)
        parts.append(f"{rejected} rejected ({kinds})")
    else:
        parts.append("none rejected")
    classes = ", ".join(f"{name} {count}" for name, count in sorted(tally.classes.items()))
    parts.append(f"non-QSO classes: {classes}" if classes else "non-QSO classes: none")
    parts.append(f"{tally.anomalous} with anomaly score > 0.99")
    if tally.masked:
        parts.append(f"{tally.masked} pixels with non-finite or absurd values masked")
    return "qsocube encode: " + "; ".join(parts) + f"; wrote {out}"


def run(args: argparse.Namespace) -> int:
    on_dask = wants_dask(args.scheduler, args.workers)
    if on_dask:
        from qsocube.core.cluster import require_dask

        require_dask("--scheduler" if args.scheduler else "--workers")
    check_output(args.out, args.overwrite)
    encoder = Encoder(args.model, threads=args.threads,
                      min_covered_fraction=args.min_covered_fraction)
    sources = discover(args.inputs, encoder.grid)
    if is_among(args.out, [s.path for s in sources]
                + [encoder.pair.encoder_path, encoder.pair.decoder_path]):
        raise UsageError(f"{args.out}: is one of the inputs; choose another --out")
    remove_stale_partials(args.out.parent, say, target=args.out, recursive=False)
    total = sum(s.count for s in sources)
    say(f"qsocube encode: {total} spectra in {len(sources)} inputs with {args.model.name} "
        f"(latent size {encoder.latent_size})")
    rate, tally = Rate("encode", total), Tally()
    start = time.perf_counter()  # the cluster's start-up counts: it is part of the cost
    with contextlib.ExitStack() as stack:
        if on_dask:
            from qsocube.core.cluster import dask_client
            from qsocube.inference import distributed

            client = stack.enter_context(dask_client(args.scheduler, args.workers))
            say(f"qsocube encode: on {distributed.describe(client)}")
            parts = ((part, files, 0) for part, files in distributed.encode_parts(
                client, plan_parts(sources, args.batch_size), encoder, args.threads))
        else:
            plan = list(plan_parts(sources, args.batch_size))
            processes = processes_for(args.processes or default_processes(), len(plan))
            if processes > 1:
                say(f"qsocube encode: reading on {processes} local processes")
            batches = read_batches(plan, encoder.grid, encoder.pair.meta["resampling_method"],
                                   args.min_covered_fraction, processes)
            if processes == 1:  # overlap reading with encoding and writing all the same
                batches = prefetched(batches)
            parts = ((encoder.encode_batch(b), b.files, b.masked) for b in batches)
        with open_writer(args.out, encoder.latent_size, overwrite=args.overwrite) as writer:
            for part, files, masked in parts:
                writer.write(part)
                tally.add(part, files)
                tally.masked += masked
                elapsed = max(time.perf_counter() - start, 1e-9)
                rate.update(len(part), f"{tally.files}/{len(sources)} files, "
                                       f"{tally.files / elapsed:,.0f} files/s")
            writer.finish(_attrs(encoder, args, tally, total))
    for line in tally.reasons:
        say(line)
    say(summary(tally, total, time.perf_counter() - start, args.out))
    return 1 if tally.rejected else 0


_END = object()


def prefetched(items: Iterator[Batch], depth: int = 2) -> Iterator[Batch]:
    """Produce the next batches on a thread while the caller encodes: at most ``depth`` wait."""
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(item: object) -> bool:
        while not stop.is_set():
            try:
                slots.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not offer(item):
                    return
            offer(_END)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            offer(exc)

    worker = threading.Thread(target=produce, daemon=True)
    worker.start()
    try:
        while (item := slots.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join(timeout=5)


def _attrs(encoder: Encoder, args: argparse.Namespace, tally: Tally, total: int) -> dict:
    meta = encoder.pair.meta
    return {
        "title": "qsocube latent codes of user spectra",
        "software_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "encoder_onnx": encoder.pair.encoder_path.name,
        "encoder_sha256": file_sha256(encoder.pair.encoder_path),
        "decoder_onnx": encoder.pair.decoder_path.name,
        "decoder_sha256": file_sha256(encoder.pair.decoder_path),
        "model_product_version": meta["product_version"],
        "latent_size": encoder.latent_size,
        "grid": meta["grid"], "grid_sha256": meta["grid_sha256"],
        "normalisation": meta["normalisation"],
        "resampling_method": meta["resampling_method"],
        "min_covered_fraction": args.min_covered_fraction,
        "anomaly_reference": ("train_recon_mse_quantiles of the encoder"
                              if encoder.pair.quantiles is not None else "none (NaN scores)"),
        "n_spectra": total, "n_rejected": tally.rejected, "n_masked_values": tally.masked,
    }
