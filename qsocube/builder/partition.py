"""One partition of the build: read, screen and resample a list of files.

A pure function of its inputs, so the serial path and a Dask worker run exactly the
same code; the writer merges partitions in order and catches duplicates across them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from qsocube.core.errors import InputError, Rejection
from qsocube.core.inputs import printable
from qsocube.core.prepare import Prepared, Verdict, prepare_each, usability
from qsocube.core.speclite import SpecLite, read_spec_lite

# Rejections that are a selection, not a problem: counted in /rejected, not printed.
QUIET = frozenset({Rejection.low_snr})


@dataclass(frozen=True)
class Record:
    """What the cube keeps of an accepted input besides its pixels."""

    name: str
    spec_id: str
    meta: dict
    sha256: str
    masked: int = 0  # pixels with data masked by the value rule (qsocube.core.values)


@dataclass(frozen=True)
class Rejected:
    """One input left out of the cube: its file name, why (code) and why (words)."""

    name: str
    code: Rejection
    reason: str


@dataclass
class Partition:
    records: list[Record] = field(default_factory=list)
    prepared: Prepared | None = None  # rows aligned with records
    rejected: list[Rejected] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)


def _selection(spectrum: SpecLite, catalog_snr: Mapping[str, float] | None, min_snr: float
               ) -> Verdict:
    key = spectrum.spec_id
    if catalog_snr is not None and key not in catalog_snr:
        return Verdict(Rejection.no_catalog_row, f"no row for {key} in the catalogue")
    snr = catalog_snr[key] if catalog_snr is not None else spectrum.meta.get("SN_MEDIAN_ALL")
    if min_snr <= 0:
        return Verdict(Rejection.ok)
    if snr is None or not np.isfinite(snr):
        return Verdict(Rejection.no_snr, "no SN_MEDIAN_ALL to select on")
    if snr < min_snr:
        return Verdict(Rejection.low_snr,
                       f"SN_MEDIAN_ALL {snr:.2f} below the selection threshold {min_snr:g}")
    return Verdict(Rejection.ok)


def process_partition(paths: Sequence[Path], catalog_snr: Mapping[str, float] | None,
                      config) -> Partition:
    """Read, select and resample ``paths``; every file ends up accepted or rejected.

    Each file passes one boundary (``read_spec_lite``): whatever goes wrong with it
    becomes its rejection, with a code. Resampling is one call for the partition; should
    it fail, each spectrum is resampled alone, so only the one that fails is rejected.
    """
    result = Partition()
    kept: list[SpecLite] = []
    for path in paths:
        try:
            spectrum = read_spec_lite(path)
        except InputError as exc:
            result.rejected.append(Rejected(printable(Path(path).name), exc.reason,
                                            printable(exc.detail)))
            result.messages.append(f"rejected {exc}")
            continue
        verdict = _selection(spectrum, catalog_snr, config.min_snr)
        if not verdict.ok:
            result.rejected.append(Rejected(printable(Path(path).name), verdict.code,
                                            verdict.reason))
            if verdict.code not in QUIET:
                result.messages.append(f"rejected {path}: {verdict.reason}")
            continue
        if spectrum.masked:
            result.messages.append(f"{path}: masked {spectrum.masked} pixels with non-finite "
                                   "or absurd values")
        kept.append(spectrum)
    if not kept:
        return result
    prepared, good, failed = prepare_each(kept, config.grid, config.method)
    for index, detail in failed:
        path = kept[index].path
        result.rejected.append(Rejected(printable(path.name), Rejection.unreadable,
                                        printable(detail)))
        result.messages.append(f"rejected {path}: {detail}")
    kept = [kept[i] for i in good]
    if prepared is None:
        return result
    verdicts = usability(prepared, config.min_covered_fraction, config.coverage == "full")
    for spectrum, verdict in zip(kept, verdicts, strict=True):
        if verdict.ok:
            result.records.append(Record(printable(spectrum.path.name), spectrum.spec_id,
                                         spectrum.meta, spectrum.sha256, spectrum.masked))
        else:
            result.rejected.append(Rejected(printable(spectrum.path.name), verdict.code,
                                            verdict.reason))
            result.messages.append(f"rejected {spectrum.path}: {verdict.reason}")
    result.prepared = prepared.rows(np.array([v.ok for v in verdicts]))
    return result
