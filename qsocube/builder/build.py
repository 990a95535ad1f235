"""Build the cube: spec-lite files (+ a DR16Q catalogue) -> one HDF5 file.

Files are read in batches (the per-file loop is the I/O), each batch is resampled in
one vectorised call, and accepted rows are appended to the cube's datasets in a
temporary file that is renamed into place only when everything is written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from qsocube.builder import cubewriter
from qsocube.builder.partition import Rejected, process_partition
from qsocube.core import defaults
from qsocube.core.atomic import exclusive, remove_stale_partials
from qsocube.core.cluster import dask_client, wants_dask
from qsocube.core.errors import MissingInputError, Rejection, UsageError
from qsocube.core.grid import DEFAULT_GRID, WavelengthGrid
from qsocube.core.inputs import by_name, find_inputs, is_among
from qsocube.core.parallel import ordered_map, processes_for
from qsocube.core.preprocess import canonical_method
from qsocube.core.progress import Rate, say

COVERAGE_POLICIES = ("partial", "full")


@dataclass(frozen=True)
class BuildConfig:
    """What a cube is built with (recorded as the cube's ``build_config``).

    ``min_snr``: keep SN_MEDIAN_ALL >= this (the study's "snr10" sample; 0 keeps all);
    ``coverage``: "partial" keeps spectra with at least ``min_covered_fraction`` of the grid
    valid, "full" is the study's rule (the spectrum must span the whole grid); ``method``:
    resampling, "rebin" or "study"; the grid (``n_pix`` pixels, ``wave_min``-``wave_max``
    Angstrom); ``batch_size``: files per partition.
    """

    min_snr: float = defaults.MIN_SNR
    coverage: str = "partial"
    min_covered_fraction: float = defaults.MIN_COVERED_FRACTION
    method: str = "rebin"
    n_pix: int = DEFAULT_GRID.n_pix
    wave_min: float = DEFAULT_GRID.wave_min
    wave_max: float = DEFAULT_GRID.wave_max
    batch_size: int = defaults.BATCH_SIZE

    def __post_init__(self) -> None:
        problems = [text for bad, text in (
            (not math.isfinite(self.min_snr), "min_snr must be a finite number"),
            (not 0 <= self.min_covered_fraction <= 1, "min_covered_fraction must be in [0, 1]"),
            (self.n_pix < 2, "n_pix must be at least 2"),
            (not 0 < self.wave_min < self.wave_max < math.inf,
             "the wavelength range needs 0 < wave_min < wave_max"),
            (self.batch_size < 1, "batch_size must be at least 1")) if bad]
        if problems:
            raise UsageError(f"build configuration: {'; '.join(problems)}")
        if self.coverage not in COVERAGE_POLICIES:
            raise UsageError(f"coverage policy {self.coverage!r}: choose from "
                             f"{', '.join(COVERAGE_POLICIES)}")
        try:
            object.__setattr__(self, "method", canonical_method(self.method))
        except ValueError as exc:
            raise UsageError(str(exc)) from None

    @property
    def grid(self) -> WavelengthGrid:
        return WavelengthGrid(self.n_pix, self.wave_min, self.wave_max)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    def sha256(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()


def build_cube(spectra_sources: Sequence[str | Path], out: Path, *,
               catalog_path: Path | None = None, truth_path: Path | None = None,
               config: BuildConfig | None = None,
               source: str = "SDSS", overwrite: bool = False,
               scheduler: str | None = None, workers: int | None = None,
               processes: int = 1, report: Callable[[str], None] = say) -> dict:
    """Build a cube at ``out`` (atomically) and return a summary.

    Inputs are found by ``qsocube.core.inputs`` and taken in file-name order. With
    ``scheduler`` (a Dask scheduler address) or ``workers`` > 1 (a LocalCluster), or else
    ``processes`` > 1 local processes, partitions of ``config.batch_size`` files are read
    and resampled in parallel and gathered here in order, so the cube is identical to the
    serial path's. Local processes are used only when there are two partitions or more.
    """
    config = config or BuildConfig()
    out = Path(out)
    check_output(out, overwrite)
    paths = by_name(find_inputs(spectra_sources))
    if not paths:
        raise MissingInputError(f"no spectrum files in {', '.join(map(str, spectra_sources))}")
    if is_among(out, [*paths, catalog_path, truth_path]):
        raise UsageError(f"{out}: is one of the inputs; choose another --out")
    with exclusive(out, "this cube"):
        if out.exists() and not overwrite:  # written by another run since the check above
            raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
        remove_stale_partials(out.parent, report, target=out, recursive=False)
        return _build(paths, out, catalog_path, truth_path, config, source, overwrite,
                      scheduler, workers, processes, report)


def check_output(out: Path, overwrite: bool) -> None:
    """Refuse an output that cannot be a cube before any work: a folder, an existing file
    without ``overwrite``, a folder that cannot be created."""
    if out.is_dir():
        raise UsageError(f"{out}: is a folder; --out names the cube file to write")
    if os.path.lexists(out) and not overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    if out.parent.exists() and not out.parent.is_dir():
        raise UsageError(f"{out.parent}: is not a folder")


def _build(paths: list[Path], out: Path, catalog_path: Path | None, truth_path: Path | None,
           config: BuildConfig, source: str, overwrite: bool, scheduler: str | None,
           workers: int | None, processes: int, report: Callable[[str], None]) -> dict:
    from qsocube.builder.catalog_join import CatalogIndex

    catalog = CatalogIndex.load(catalog_path) if catalog_path else None
    catalog_snr = catalog.snr_by_key() if catalog is not None else None
    if catalog is not None and catalog.duplicates:
        report(f"{catalog.path}: {catalog.duplicates_text()}")
    started = time.perf_counter()
    rate = Rate("build", len(paths), unit="files")
    seen: dict[str, str] = {}
    rejected: list[Rejected] = []
    chunks = [paths[lo:lo + config.batch_size] for lo in range(0, len(paths), config.batch_size)]
    with contextlib.ExitStack() as stack, cubewriter.CubeWriter(out, config.grid,
                                                                overwrite) as writer:
        client = (stack.enter_context(dask_client(scheduler, workers))
                  if wants_dask(scheduler, workers) else None)
        local = 1 if client is not None else processes_for(processes, len(chunks))
        if local > 1:
            report(f"build: reading and resampling on {local} local processes")
        parts = ordered_map(process_partition, chunks, catalog_snr, config, client=client,
                            processes=local)
        for chunk, part in zip(chunks, parts, strict=True):
            for message in part.messages:
                report(message)
            duplicates = writer.append(part, seen)
            for duplicate in duplicates:
                report(f"rejected {duplicate.name}: {duplicate.reason}")
            rejected += part.rejected + duplicates
            rate.update(len(chunk), extra=f"{writer.count} accepted, {len(rejected)} rejected")
        if catalog is not None:
            missing = catalog.without_spectrum(seen)
            if missing:
                rejected.append(Rejected(catalog.path.name, Rejection.no_spectrum_file,
                                         f"{len(missing)} catalogue rows have no spectrum "
                                         f"file (e.g. {', '.join(missing[:3])})"))
            if catalog.duplicates:
                rejected.append(Rejected(catalog.path.name, Rejection.duplicate,
                                         catalog.duplicates_text()))
        inputs_sha = writer.finish(
            catalog=catalog, truth_path=truth_path, rejected=rejected, config=config,
            source=source, catalog_path=catalog_path)
        for message in writer.messages:
            report(message)
    summary = {"cube": str(out), "accepted": writer.count, "rejected": len(rejected),
               "files": len(paths), "seconds": round(time.perf_counter() - started, 2),
               "inputs_sha256": inputs_sha}
    grid = config.grid
    report(f"Wrote {out}: {writer.count} spectra on a {grid.n_pix}-pixel grid "
           f"({grid.wave_min:g}-{grid.wave_max:g} A) from {len(paths)} files, "
           f"{len(rejected)} inputs rejected (listed in /rejected), in {summary['seconds']} s "
           f"({len(paths) / max(summary['seconds'], 1e-9):,.0f} files/s).")
    return summary
