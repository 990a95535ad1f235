"""Catalogue columns as the figures and tables use them, with DR16Q's realities made explicit.

* "not measured" values are NaN in the cube (the builder turned DR16Q's sentinels into NaN);
  they are excluded everywhere and counted, so every caption can say how many.
* NHI_DLA and CONF_DLA hold five DLA slots per spectrum; each is reduced to one number:
  the largest value over the occupied slots (the strongest / most confident absorber). A
  spectrum with all five slots empty has no catalogued DLA and counts as not measured.
* X-ray fluxes span decades and are shown as log10; BALnicity indices are 0 for most
  quasars and up to ~10^4 km/s for BALs, so they are shown as log10(1 + BI / (km/s)).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr

STUDY_COLUMNS = ("RA", "DEC", "MJD", "Z", "NHI_DLA", "CONF_DLA", "BAL_PROB", "BI_CIV", "BI_SIIV",
                "PLATESN2", "M_I", "SN_MEDIAN_ALL", "XMM_SOFT_FLUX", "XMM_HARD_FLUX",
                "XMM_TOTAL_FLUX")
CORNER_COLUMNS = ("Z", "MJD", "M_I", "BAL_PROB", "SN_MEDIAN_ALL")
TRUTH_SKIP = frozenset({"PLATE", "MJD", "FIBERID", "THING_ID", "RA", "DEC"})
ARRAY_REDUCTION = {
    "NHI_DLA": "largest log N_HI over the five DLA slots (spectra with no DLA: not measured)",
    "CONF_DLA": "highest confidence over the five DLA slots (spectra with no DLA: not measured)",
}
TRANSFORMS = {"XMM_SOFT_FLUX": "log10", "XMM_HARD_FLUX": "log10", "XMM_TOTAL_FLUX": "log10",
              "BI_CIV": "log10(1+x)", "BI_SIIV": "log10(1+x)"}
# Units for labels; "1" (dimensionless) is left off. The cube's units attribute wins if set.
UNIT_LABELS = {"deg": "deg", "d": "d", "mag": "mag", "km s-1": "km/s",
               "erg s-1 cm-2": "erg s$^{-1}$ cm$^{-2}$", "log(cm-2)": "log cm$^{-2}$",
               "dex(cm-2)": "log cm$^{-2}$"}


@dataclass(frozen=True)
class Column:
    """One column, reduced to a float per spectrum (NaN = not measured), in plotted units."""

    name: str
    source: str  # "catalog" or "truth"
    values: np.ndarray  # float64 (n,), transformed as ``transform`` says
    units: str
    long_name: str
    transform: str = "linear"  # "linear", "log10" or "log10(1+x)"
    reduction: str = ""  # how an array column became one number
    missing_rule: str = ""
    n_nonpositive: int = 0  # excluded by a log transform (not possible on a log axis)

    @property
    def n_total(self) -> int:
        return len(self.values)

    @property
    def measured(self) -> np.ndarray:
        return np.isfinite(self.values)

    @property
    def n_measured(self) -> int:
        return int(self.measured.sum())

    @property
    def n_missing(self) -> int:
        return self.n_total - self.n_measured

    @property
    def key(self) -> str:
        return self.name if self.source == "catalog" else f"truth.{self.name}"

    @property
    def label(self) -> str:
        """Axis label with units, e.g. 'log10 XMM_SOFT_FLUX [erg s-1 cm-2]'."""
        unit = UNIT_LABELS.get(self.units, self.units)
        unit = "" if unit in ("", "1") else f" [{unit}]"
        name = self.key
        if self.transform == "log10":
            return f"log$_{{10}}$ {name}{unit}"
        if self.transform == "log10(1+x)":
            return f"log$_{{10}}$(1 + {name}{unit})"
        return f"{name}{unit}"

    def exclusion_text(self) -> str:
        """Caption sentence: what was excluded and why, with counts."""
        parts = []
        if self.reduction:
            parts.append(f"Reduced per spectrum to the {self.reduction}.")
        if self.transform != "linear":
            parts.append(f"Shown as {self.transform.replace('x', self.name)}.")
        excluded = self.n_missing - self.n_nonpositive
        if excluded:
            parts.append(f"{excluded:,} of {self.n_total:,} spectra have no measurement "
                         "(DR16Q 'not measured', NaN in the cube) and are excluded.")
        if self.n_nonpositive:
            parts.append(f"{self.n_nonpositive:,} non-positive values cannot be shown on a "
                         "log scale and are excluded.")
        if not self.n_measured:
            parts.append("Nothing is measured for this column in this release.")
        return " ".join(parts) or f"All {self.n_total:,} spectra have a value."


def reduce_array(name: str, values: np.ndarray) -> np.ndarray:
    """One number per spectrum from a (spectrum, dla) array: max over occupied slots."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:
        return values
    occupied = np.isfinite(values).any(axis=1)
    filled = np.where(np.isfinite(values), values, -np.inf).max(axis=1)
    return np.where(occupied, filled, np.nan)


def transform(values: np.ndarray, how: str) -> tuple[np.ndarray, int]:
    """(transformed values, number of finite values dropped because log needs > 0 / > -1)."""
    values = np.asarray(values, dtype=np.float64)
    if how == "linear":
        return values, 0
    floor = 0.0 if how == "log10" else -1.0
    bad = np.isfinite(values) & (values <= floor)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.log10(values) if how == "log10" else np.log10(1.0 + values)
    return np.where(bad | ~np.isfinite(values), np.nan, out), int(bad.sum())


def make_column(name: str, variable: xr.DataArray, source: str = "catalog") -> Column:
    raw = np.asarray(variable.values)
    if raw.dtype.kind not in "biuf":
        raise TypeError(f"{source}/{name} is not numeric")
    reduction = ARRAY_REDUCTION.get(name, "") if raw.ndim > 1 else ""
    if raw.ndim > 1 and not reduction:
        reduction = f"largest value over the {raw.shape[1]} entries"
    values, n_bad = transform(reduce_array(name, raw), TRANSFORMS.get(name, "linear"))
    return Column(name, source, values, str(variable.attrs.get("units", "")),
                  str(variable.attrs.get("long_name", name)), TRANSFORMS.get(name, "linear"),
                  reduction, str(variable.attrs.get("missing_value_rule", "")), n_bad)


def catalog_columns(catalog: xr.Dataset, names: tuple[str, ...] = STUDY_COLUMNS
                    ) -> dict[str, Column]:
    """The named columns that the catalogue holds (absent ones are skipped)."""
    return {name: make_column(name, catalog[name]) for name in names if name in catalog}


def truth_columns(truth: xr.Dataset | None) -> dict[str, Column]:
    """Every numeric per-spectrum column of /truth (simulated releases) except identifiers
    and positions, which say nothing about the spectra and repeat the catalogue."""
    if truth is None:
        return {}
    columns = {}
    for name in sorted(truth.data_vars):
        variable = truth[name]
        if (variable.dims == ("spectrum",) and variable.dtype.kind in "biuf"
                and name not in TRUTH_SKIP):
            column = make_column(name, variable, source="truth")
            columns[column.key] = column
    return columns
