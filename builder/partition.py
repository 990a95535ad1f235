"""One partition of the build: read, screen and resample a list of files.

A pure function of its inputs, so the serial path and a Dask worker run exactly the
same code; the writer merges partitions in order and catches duplicates across them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from qsocube.cube import file_sha256
from qsocube.prepare import Prepared, prepare, usability
from qsocube.speclite import SpecLite, SpectrumError, read_spec_lite


@dataclass(frozen=True)
class Record:
    """What the cube keeps of an accepted input besides its pixels."""

    name: str
    spec_id: str
    meta: dict
    sha256: str


@dataclass
class Partition:
    records: list[Record] = field(default_factory=list)
    prepared: Prepared | None = None  # rows aligned with records
    rejected: list[tuple[str, str]] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)


def _selection_reason(spectrum: SpecLite, catalog_snr: Mapping[str, float] | None,
                      min_snr: float) -> str | None:
    key = spectrum.spec_id
    if catalog_snr is not None and key not in catalog_snr:
        return f"no row for {key} in the catalogue"
    snr = catalog_snr[key] if catalog_snr is not None else spectrum.meta.get("SN_MEDIAN_ALL")
    if min_snr <= 0:
        return None
    if snr is None or not np.isfinite(snr):
        return "no SN_MEDIAN_ALL to select on"
    if snr < min_snr:
        return f"SN_MEDIAN_ALL {snr:.2f} below the selection threshold {min_snr:g}"
    return None


def process_partition(paths: Sequence[Path], catalog_snr: Mapping[str, float] | None,
                      config) -> Partition:
    """Read, select and resample ``paths``; every file ends up accepted or rejected."""
    result = Partition()
    kept: list[SpecLite] = []
    for path in paths:
        try:
            spectrum = read_spec_lite(path)
        except SpectrumError as exc:
            result.rejected.append((Path(path).name, str(exc).split(": ", 1)[-1]))
            result.messages.append(f"rejected {exc}")
            continue
        reason = _selection_reason(spectrum, catalog_snr, config.min_snr)
        if reason:
            result.rejected.append((Path(path).name, reason))
            if not reason.startswith("SN_MEDIAN_ALL"):
                result.messages.append(f"rejected {path}: {reason}")
            continue
        kept.append(spectrum)
    if not kept:
        return result
    prepared = prepare(kept, config.grid, config.method)
    reasons = usability(prepared, config.min_covered_fraction, config.coverage == "full")
    keep = np.array([r is None for r in reasons])
    for spectrum, reason in zip(kept, reasons, strict=True):
        if reason is None:
            result.records.append(Record(spectrum.path.name, spectrum.spec_id, spectrum.meta,
                                         file_sha256(spectrum.path)))
        else:
            result.rejected.append((spectrum.path.name, reason))
    result.prepared = Prepared(prepared.flux[keep], prepared.ivar[keep], prepared.mask[keep],
                               prepared.covered_fraction[keep], prepared.norm[keep])
    return result
