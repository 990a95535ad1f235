"""``qsocube encode --scheduler/--workers``: read, prepare and encode on a Dask cluster.

Optional (the ``scale`` extra): dask is imported only when these options are used. The
client plans the serial path's parts (``sources.plan_parts``: runs of up to ``--batch``
FITS files, row ranges of array inputs), the workers read, resample and encode them with
the serial path's code (each worker process opens the ONNX pair once), and the results
come back in input order to the one writer. Same parts, same code: the output equals the
serial path's. Workers must see the model and the inputs at the same paths (a shared
filesystem; relative inputs are taken relative to the client's folder, and named as given);
the model's sha256 is checked on every worker.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from qsocube.core.cube import file_sha256
from qsocube.core.errors import ModelError
from qsocube.core.parallel import ordered_map
from qsocube.inference.encoder import Encoded, Encoder
from qsocube.inference.sources import Part, read_part


def encode_parts(client: Any, parts: Iterable[Part], encoder: Encoder,
                 threads: int | None = None) -> Iterator[tuple[Encoded, int]]:
    """(encoded part, input files it finished) for every part, in order, computed on the
    cluster; at most two parts per worker thread are in flight, so memory stays bounded."""
    pair = encoder.pair
    model = (str(pair.encoder_path.resolve()), file_sha256(pair.encoder_path),
             file_sha256(pair.decoder_path))
    settings = (threads, encoder.min_covered_fraction, pair.meta["resampling_method"],
                os.getcwd())
    window = 2 * max(sum(client.nthreads().values()), 1)
    return ordered_map(encode_part, parts, model, settings, client=client, window=window)


_ENCODERS: dict[tuple, Encoder] = {}


def encode_part(part: Part, model: tuple[str, str, str], settings: tuple
                ) -> tuple[Encoded, int]:
    """On a worker: read, prepare and encode one part with the worker's cached encoder."""
    threads, min_covered, method, folder = settings
    encoder = _worker_encoder(model, threads, min_covered)
    absolute = replace(part, paths=tuple(Path(folder, p) for p in part.paths))
    batch = read_part(absolute, encoder.grid, method, min_covered)
    if absolute.paths != part.paths:  # name relative inputs as given, as the serial path does
        pairs = [(str(a), str(p)) for a, p in zip(absolute.paths, part.paths, strict=True)]
        for i in range(len(batch)):
            read, given = pairs[i if part.kind == "fits" else 0]
            batch.source[i] = batch.source[i].replace(read, given, 1)
            batch.reason[i] = batch.reason[i].replace(read, given)
    return encoder.encode_batch(batch), batch.files


def _worker_encoder(model: tuple[str, str, str], threads: int | None, min_covered: float
                    ) -> Encoder:
    key = (model, threads, min_covered)
    if key not in _ENCODERS:
        path, encoder_sha, decoder_sha = model
        # one onnxruntime thread per task by default: each worker thread is a slot
        encoder = Encoder(path, threads=threads or 1, min_covered_fraction=min_covered)
        for role, sha in (("encoder", encoder_sha), ("decoder", decoder_sha)):
            found = getattr(encoder.pair, f"{role}_path")
            if file_sha256(found) != sha:
                raise ModelError(f"{found}: differs on this Dask worker from the client's "
                                 f"{role} (sha256); workers need the same model at the same "
                                 "path")
        _ENCODERS.clear()  # one model per worker process at a time
        _ENCODERS[key] = encoder
    return _ENCODERS[key]


def describe(client: Any) -> str:
    workers = client.nthreads()
    return (f"{len(workers)} Dask worker(s), {sum(workers.values())} thread(s) at "
            f"{client.scheduler.address}")
