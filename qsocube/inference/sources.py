"""Read the inputs of ``qsocube encode`` in bounded batches of model input.

The inputs are found and classified by ``qsocube.inference.inputs``. Every spectrum goes through
qsocube's reader, resampler and normaliser: the builder's path. Batches are planned before
they are read (``plan_parts``: runs of FITS files, row ranges of array inputs) so that local
processes or a Dask cluster read the same parts the serial path reads (``read_part``).
A spectrum that cannot be used gets a flagged row with a reason, never an exception.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import h5py
import numpy as np

from qsocube.core.errors import InputError, Rejection
from qsocube.core.grid import WavelengthGrid
from qsocube.core.inputs import printable
from qsocube.core.parallel import ordered_map, processes_for
from qsocube.core.prepare import Prepared, prepare_each, usability
from qsocube.core.preprocess import NO_DATA, model_input, normalisation_factor
from qsocube.core.speclite import SPEC_NAME, read_spec_lite
from qsocube.core.values import screen_rows
from qsocube.inference.inputs import Source

# Row flags are Rejection codes (CF flag_values / flag_meanings in the output); 0 = encoded.
ID_COLUMNS = {"PLATE": (np.int32, -1), "MJD": (np.int32, -1), "FIBERID": (np.int32, -1),
              "CLASS": (object, ""), "Z": (np.float32, np.nan)}


@dataclass
class Batch:
    """Model input for up to a batch of spectra; rejected rows are zero and flagged."""

    source: list[str]
    ids: dict[str, np.ndarray]  # ID_COLUMNS along the batch
    x: np.ndarray  # (n, n_pix) float32
    w: np.ndarray  # (n, n_pix) float32
    covered_fraction: np.ndarray  # (n,) float32
    flag: np.ndarray  # (n,) uint8 Rejection codes, 0 = usable
    reason: list[str]
    files: int = 0  # input files finished with this batch (for progress)
    masked: int = 0  # pixels with data masked by the value rule (qsocube.core.values)

    def __len__(self) -> int:
        return len(self.source)


def empty_ids(n: int) -> dict[str, np.ndarray]:
    return {k: np.full(n, fill, dtype=dtype) for k, (dtype, fill) in ID_COLUMNS.items()}


def _model_batch(prepared: Prepared, min_covered: float) -> tuple[np.ndarray, ...]:
    verdicts = usability(prepared, min_covered)
    flag = np.array([v.code for v in verdicts], np.uint8)
    good = flag == Rejection.ok
    with np.errstate(all="ignore"):
        x, w = model_input(prepared.flux, prepared.ivar, prepared.mask, prepared.norm)
    x[~good], w[~good] = 0, 0
    return x, w, flag, [v.reason for v in verdicts]


def _fits_batch(paths: list[Path], grid: WavelengthGrid, method: str, min_covered: float
                ) -> Batch:
    n = len(paths)
    ids, flag, reason = empty_ids(n), np.zeros(n, np.uint8), [""] * n
    spectra, rows, masked = [], [], 0
    for i, path in enumerate(paths):
        named = SPEC_NAME.match(path.name)
        if named:
            for key, group in (("PLATE", 1), ("MJD", 2), ("FIBERID", 3)):
                ids[key][i] = int(named.group(group))
        try:  # the reader is the boundary of one input: it raises InputError only
            spec = read_spec_lite(path)
        except InputError as exc:
            flag[i], reason[i] = exc.reason, printable(exc.detail)
            continue
        for key in ID_COLUMNS:
            if key in spec.meta:
                try:
                    ids[key][i] = spec.meta[key]
                except (TypeError, ValueError, OverflowError):
                    pass  # an unusable optional value (Z, CLASS) stays unknown
        spectra.append(spec)
        rows.append(i)
        masked += spec.masked
    x = np.zeros((n, grid.n_pix), np.float32)
    w, covered = np.zeros_like(x), np.zeros(n, np.float32)
    if spectra:
        prepared, good, failed = prepare_each(spectra, grid, method)
        for index, text in failed:
            flag[rows[index]], reason[rows[index]] = Rejection.unreadable, text
        rows = [rows[i] for i in good]
        if prepared is not None:
            x[rows], w[rows], flag[rows], good_reasons = _model_batch(prepared, min_covered)
            covered[rows] = prepared.covered_fraction
            for row, text in zip(rows, good_reasons, strict=True):
                reason[row] = text
    return Batch([printable(p) for p in paths], ids, x, w, covered, flag, reason, files=n,
                 masked=masked)


def grid_batch(flux: np.ndarray, ivar: np.ndarray, min_covered: float,
               mask: np.ndarray | None = None, norm: np.ndarray | None = None
               ) -> tuple[np.ndarray, ...]:
    """Model input from arrays on the grid in physical units: (x, w, covered, flag, reasons).

    A pixel is valid where ivar > 0 and both values are finite (and ``mask`` is 0 if given),
    after the reader's value rule (``qsocube.core.values``: non-finite and absurd values
    are masked); ``norm`` defaults to the builder's normalisation of the valid pixels.
    """
    flux, ivar, _ = screen_rows(np.asarray(flux, np.float32), np.asarray(ivar, np.float32))
    # the screened flux is finite everywhere and the screened ivar is finite or 0
    valid = ivar > 0
    if mask is None:
        mask = np.where(valid, np.uint8(0), np.uint8(NO_DATA))
    else:  # a cube's own mask is authoritative (no value is left non-finite to add to it)
        valid = mask == 0
    flux, ivar = np.where(valid, flux, 0), np.where(valid, ivar, 0)
    covered = valid.mean(axis=1).astype(np.float32)
    if norm is None:
        norm = normalisation_factor(flux, mask)
    prepared = Prepared(flux, ivar, mask.astype(np.uint8), covered, np.asarray(norm, np.float32))
    x, w, flag, reasons = _model_batch(prepared, min_covered)
    return x, w, covered, flag, reasons


def _h5_ids(h5: h5py.File, rows: slice, n: int) -> dict[str, np.ndarray]:
    ids = empty_ids(n)
    for key in ID_COLUMNS:
        for where in (f"catalog/{key}", key):
            if where in h5:
                data = h5[where]
                ids[key] = (np.asarray(data.asstr()[rows], dtype=object)
                            if data.dtype.kind in "OS" else data[rows].astype(ids[key].dtype))
                break
    return ids


def _read_rows(kind: str, handle, rows: slice, min_covered: float
               ) -> tuple[dict[str, np.ndarray], tuple[np.ndarray, ...]]:
    if kind == "npy":
        return empty_ids(rows.stop - rows.start), grid_batch(handle[0, rows], handle[1, rows],
                                                             min_covered)
    cube = kind == "cube"
    arrays = grid_batch(handle["flux"][rows], handle["ivar"][rows], min_covered,
                        handle["mask"][rows] if cube else None,
                        handle["norm"][rows] if cube else None)
    return _h5_ids(handle, rows, rows.stop - rows.start), arrays


@dataclass(frozen=True)
class Part:
    """One batch of input, described but not read: FITS files, or rows of one array input."""

    paths: tuple[Path, ...]  # the FITS files, or the array input's one file
    kind: str = "fits"  # or the array Source's kind
    lo: int = 0
    hi: int = 0
    count: int = 0  # rows in the array input (its last part finishes the file)


def plan_parts(sources: list[Source], size: int = 1024) -> Iterator[Part]:
    """The batches of ``read_batches``, in input order: up to ``size`` spectra each."""
    pending: list[Path] = []
    for source in sources:
        if source.kind == "fits":
            pending.append(source.path)
            if len(pending) == size:
                yield Part(tuple(pending))
                pending = []
            continue
        if pending:
            yield Part(tuple(pending))
            pending = []
        for lo in range(0, source.count, size):
            yield Part((source.path,), source.kind, lo, min(lo + size, source.count),
                       source.count)
    if pending:
        yield Part(tuple(pending))


class PartReader:
    """Reads parts into batches; an array input stays open from its first part to its last."""

    def __init__(self, grid: WavelengthGrid, method: str, min_covered: float) -> None:
        self.grid, self.method, self.min_covered = grid, method, min_covered
        self.path: Path | None = None
        self.handle = None

    def close(self) -> None:
        if isinstance(self.handle, h5py.File):
            self.handle.close()
        self.path = self.handle = None

    def read(self, part: Part) -> Batch:
        if part.kind == "fits":
            return _fits_batch(list(part.paths), self.grid, self.method, self.min_covered)
        if self.path != part.paths[0]:
            self.close()
            self.handle = (np.load(part.paths[0], mmap_mode="r") if part.kind == "npy"
                           else h5py.File(part.paths[0], "r"))
            self.path = part.paths[0]
        try:
            return self._rows(part, self.handle)
        finally:
            if part.hi == part.count:
                self.close()

    def _rows(self, part: Part, handle) -> Batch:
        """The part's rows; rows that cannot be read (a damaged chunk) are flagged
        ``unreadable_chunk`` on their own: after a failure the part is read again chunk
        by chunk (the input's own chunks), and only the chunks that fail are flagged."""
        rows, n = slice(part.lo, part.hi), part.hi - part.lo
        try:
            ids, (x, w, covered, flag, reasons) = _read_rows(part.kind, handle, rows,
                                                             self.min_covered)
        except Exception as exc:  # e.g. a corrupt chunk: flag these rows, go on
            chunk = self._chunk(handle)
            if chunk and part.lo // chunk != (part.hi - 1) // chunk:
                edges = [part.lo, *range(part.lo - part.lo % chunk + chunk, part.hi, chunk),
                         part.hi]
                pieces = [self._rows(replace(part, lo=lo, hi=hi, count=-1), handle)
                          for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
                merged = _concat_batches(pieces)
                merged.files = int(part.hi == part.count)
                return merged
            text = " ".join(str(exc).split())[:150] or type(exc).__name__
            ids, x = empty_ids(n), np.zeros((n, self.grid.n_pix), np.float32)
            w, covered = x.copy(), np.zeros(n, np.float32)
            flag = np.full(n, Rejection.unreadable_chunk)
            reasons = [f"rows {part.lo}-{part.hi - 1} unreadable ({text})"] * n
        names = [printable(f"{part.paths[0]}[{i}]") for i in range(part.lo, part.hi)]
        done = int(part.hi == part.count)
        return Batch(names, ids, x, w, covered, flag.astype(np.uint8), reasons, files=done)

    @staticmethod
    def _chunk(handle) -> int:
        """Rows per chunk of the input's flux (0 for an input that is not chunked)."""
        try:
            chunks = handle["flux"].chunks if isinstance(handle, h5py.File) else None
        except Exception:  # the dataset itself is unreadable: no chunking to go by
            return 0
        return int(chunks[0]) if chunks else 0


def _concat_batches(batches: list[Batch]) -> Batch:
    return Batch([n for b in batches for n in b.source],
                 {k: np.concatenate([b.ids[k] for b in batches]) for k in ID_COLUMNS},
                 np.concatenate([b.x for b in batches]), np.concatenate([b.w for b in batches]),
                 np.concatenate([b.covered_fraction for b in batches]),
                 np.concatenate([b.flag for b in batches]),
                 [r for b in batches for r in b.reason], masked=sum(b.masked for b in batches))


def read_part(part: Part, grid: WavelengthGrid, method: str, min_covered: float) -> Batch:
    """One part as a batch, opening and closing its input (a task for a process or worker)."""
    reader = PartReader(grid, method, min_covered)
    try:
        return reader.read(part)
    finally:
        reader.close()


def read_batches(parts: list[Part], grid: WavelengthGrid, method: str, min_covered: float,
                 processes: int = 1) -> Iterator[Batch]:
    """The planned parts as batches, in order; memory ~ a few parts x n_pix. Read on up to
    ``processes`` local processes (``processes_for``: the same parts read by the same
    code, so the same batches), else here."""
    processes = processes_for(processes, len(parts))
    if processes > 1:
        return ordered_map(read_part, parts, grid, method, min_covered, processes=processes)
    return _read_serially(parts, grid, method, min_covered)


def _read_serially(parts: Iterable[Part], grid: WavelengthGrid, method: str,
                   min_covered: float) -> Iterator[Batch]:
    reader = PartReader(grid, method, min_covered)
    try:
        for part in parts:
            yield reader.read(part)
    finally:
        reader.close()
