"""Build the cube: spec-lite files (+ a DR16Q catalogue) -> one HDF5 file.

Files are read in batches (the per-file loop is the I/O), each batch is resampled in
one vectorised call, and accepted rows are appended to the cube's datasets in a
temporary file that is renamed into place only when everything is written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from builder import cubewriter
from builder.inputs import find_spectra
from qsocube.grid import WavelengthGrid
from qsocube.prepare import prepare
from qsocube.progress import Rate, say
from qsocube.speclite import SpecLite, SpectrumError, read_spec_lite


@dataclass(frozen=True)
class BuildConfig:
    min_snr: float = 10.0  # the seed's "snr10" sample
    coverage: str = "partial"  # "partial": keep >= min_covered_fraction; "full": the seed's rule
    min_covered_fraction: float = 0.8
    method: str = "rebin"
    n_pix: int = 1500
    wave_min: float = 3625.0
    wave_max: float = 9000.0
    batch_size: int = 1024

    @property
    def grid(self) -> WavelengthGrid:
        return WavelengthGrid(self.n_pix, self.wave_min, self.wave_max)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    def sha256(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()


@dataclass
class Accepted:
    spectra: list[SpecLite] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)


def _screen(paths: Sequence[Path], catalog, seen: dict[str, str], config: BuildConfig,
            report: Callable[[str], None]) -> Accepted:
    """Read a batch of files; keep the usable ones, reject the rest with a reason."""
    batch = Accepted()
    for path in paths:
        try:
            spectrum = read_spec_lite(path)
        except SpectrumError as exc:
            batch.rejected.append((path.name, str(exc).split(": ", 1)[-1]))
            report(f"rejected {exc}")
            continue
        key = spectrum.spec_id
        reason = None
        if key in seen:
            reason = f"duplicate PLATE-MJD-FIBER {key} (first seen in {seen[key]})"
        elif catalog is not None and key not in catalog.index:
            reason = f"no row for {key} in the catalogue"
        else:
            snr = catalog.snr(key) if catalog is not None else spectrum.meta.get("SN_MEDIAN_ALL")
            if snr is None or not np.isfinite(snr):
                reason = "no SN_MEDIAN_ALL to select on" if config.min_snr > 0 else None
            elif snr < config.min_snr:
                reason = f"SN_MEDIAN_ALL {snr:.2f} below the selection threshold {config.min_snr:g}"
        if reason:
            batch.rejected.append((path.name, reason))
            if not reason.startswith("SN_MEDIAN_ALL"):
                report(f"rejected {path}: {reason}")
            continue
        seen[key] = path.name
        batch.spectra.append(spectrum)
    return batch


def _coverage_reasons(prepared, config: BuildConfig) -> list[str | None]:
    from qsocube.preprocess import NO_COVERAGE

    reasons: list[str | None] = []
    wavelength_coverage = ((prepared.mask & NO_COVERAGE) == 0).mean(axis=1)
    for covered, valid, norm in zip(wavelength_coverage, prepared.covered_fraction,
                                    prepared.norm, strict=True):
        if config.coverage == "full" and covered < 1:
            reasons.append(f"does not cover the whole grid ({covered:.1%}); coverage policy 'full'")
        elif valid < config.min_covered_fraction:
            reasons.append(f"covers {valid:.1%} of the grid with valid pixels, below the minimum "
                           f"{config.min_covered_fraction:.0%}")
        elif not np.isfinite(norm) or norm <= 0:
            reasons.append("median flux over valid pixels is not positive")
        else:
            reasons.append(None)
    return reasons


def build_cube(spectra_sources: Sequence[str | Path], out: Path, *,
               catalog_path: Path | None = None, truth_path: Path | None = None,
               config: BuildConfig | None = None,
               source: str = "SDSS", overwrite: bool = False,
               report: Callable[[str], None] = say) -> dict:
    """Build a cube at ``out`` (atomically) and return a summary."""
    from builder.catalog_join import CatalogIndex

    config = config or BuildConfig()
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    paths = find_spectra(spectra_sources)
    if not paths:
        raise FileNotFoundError(f"no spec-*.fits files in {', '.join(map(str, spectra_sources))}")
    catalog = CatalogIndex.load(catalog_path) if catalog_path else None
    started = time.perf_counter()
    grid = config.grid
    rate = Rate("build", len(paths), unit="files")
    seen: dict[str, str] = {}
    rejected: list[tuple[str, str]] = []
    with cubewriter.CubeWriter(out, grid) as writer:
        for lo in range(0, len(paths), config.batch_size):
            batch = _screen(paths[lo:lo + config.batch_size], catalog, seen, config, report)
            rejected += batch.rejected
            if batch.spectra:
                prepared = prepare(batch.spectra, grid, config.method)
                reasons = _coverage_reasons(prepared, config)
                keep = np.array([r is None for r in reasons])
                rejected += [(s.path.name, r) for s, r in zip(batch.spectra, reasons, strict=True)
                             if r is not None]
                writer.append([s for s, k in zip(batch.spectra, keep, strict=True) if k],
                              prepared, keep)
            rate.update(min(config.batch_size, len(paths) - lo),
                        extra=f"{writer.count} accepted, {len(rejected)} rejected")
        if catalog is not None:
            missing = catalog.without_spectrum(seen)
            if missing:
                rejected.append((catalog.path.name, f"{len(missing)} catalogue rows have no "
                                 f"spectrum file (e.g. {', '.join(missing[:3])})"))
        inputs_sha = writer.finish(
            catalog=catalog, truth_path=truth_path, rejected=rejected, config=config,
            source=source, catalog_path=catalog_path)
    summary = {"cube": str(out), "accepted": writer.count, "rejected": len(rejected),
               "files": len(paths), "seconds": round(time.perf_counter() - started, 2),
               "inputs_sha256": inputs_sha}
    report(f"Wrote {out}: {writer.count} spectra on a {grid.n_pix}-pixel grid "
           f"({grid.wave_min:g}-{grid.wave_max:g} A) from {len(paths)} files, "
           f"{len(rejected)} inputs rejected (listed in /rejected), in {summary['seconds']} s "
           f"({len(paths) / max(summary['seconds'], 1e-9):,.0f} files/s).")
    return summary
