"""simulate_survey: draw a DR16Q-like survey and write it as SDSS-format files.

Output directory layout::

    OUT/spectra/spec-PPPP-MMMMM-FFFF.fits   spec-lite files (one per catalogue row,
                                            except ``missing_spectrum_fraction`` of them)
    OUT/truth.fits                          physical parameters behind each spectrum
    OUT/DR16Q_v4.fits                       the catalogue, real DR16Q_v4 layout
    OUT/SURVEY.json                         n, seed, counts, software versions

Every file is written atomically (``qsocube.core.atomic``: temp file beside it, fsync,
rename); the
catalogue and SURVEY.json come last, so a SURVEY.json means the survey is complete.
Randomness: one SeedSequence(seed) is split into a survey-level stream (all per-object
scalars, drawn at once) and one child stream per spectrum (forest field, noise, masks), so
the output is identical for any batch size.

The generator (``GENERATOR``): quasars from eigenspectra learned from real SDSS quasars,
with host galaxies, absorbers and a calibration term (:mod:`quasars`, :mod:`physics`),
observed through an instrument and noise model measured on real SDSS spectra
(:mod:`instrument`), among labelled stars, galaxies and artefacts (:mod:`contaminants`).
Its package data are ``data/templates.h5`` and ``data/instrument.h5``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import astropy
import numpy as np

from qsocube import __version__
from qsocube.builder.dr16q import write_catalog
from qsocube.core import layout
from qsocube.core.atomic import write_text_atomic
from qsocube.core.progress import say

from . import contaminants, instrument
from .catalog import catalogue_columns, truth_columns
from .contaminants import ContaminantFractions
from .fitsout import COADD_DTYPE, RUN2D, SPALL_DTYPE, SpecLiteWriter, spec_name, write_table
from .instrument import LOGLAM
from .population import BANDS, Population, draw_population
from .spectra import Batch, render_batch
from .templates import library

CATALOG_NAME = layout.SURVEY_CATALOG
TRUTH_NAME = layout.SURVEY_TRUTH
SURVEY_NAME = layout.SURVEY_RECORD
SPECTRA_DIR = layout.SURVEY_SPECTRA_DIR


GENERATOR = ("qsocube eigenspectra survey 3: quasar eigenspectra learned from real SDSS "
             "quasars (their fitted spread), empirical BOSS instrument (15% of spectra with "
             "the SDSS-I/II wavelength range), labelled contaminants")

print_to_stderr = say  # the default progress sink: one line on stderr


def median_sn(flux: np.ndarray, ivar: np.ndarray) -> float:
    """SDSS median S/N: median of flux * sqrt(ivar) over pixels with ivar > 0, in float64
    from the stored float32 columns, exactly as a reader of the file recomputes it."""
    flux, ivar = np.asarray(flux, np.float64), np.asarray(ivar, np.float64)
    good = ivar > 0
    return float(np.median(flux[good] * np.sqrt(ivar[good]))) if good.any() else 0.0


def _version() -> str:
    return __version__


def _prepare(out_dir: Path, overwrite: bool) -> Path:
    """Refuse a non-empty ``out_dir`` unless ``overwrite``; then clear our own products."""
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out_dir} is not empty; pass overwrite=True to replace it")
        # SURVEY.json first: an interrupted rerun must not look complete.
        for name in (SURVEY_NAME, CATALOG_NAME, TRUTH_NAME):
            (out_dir / name).unlink(missing_ok=True)
        for old in (out_dir / SPECTRA_DIR).glob("spec-*.fits"):
            old.unlink()
    spectra = out_dir / SPECTRA_DIR
    spectra.mkdir(parents=True, exist_ok=True)
    return spectra


def _band_sn(wave: np.ndarray, flux: np.ndarray, ivar: np.ndarray) -> np.ndarray:
    """Median S/N in windows around the ugriz bands (the spAll SN_MEDIAN array)."""
    out = np.zeros(5, dtype=np.float32)
    for k, centre in enumerate(BANDS):
        sel = (np.abs(wave - centre) < 0.1 * centre) & (ivar > 0)
        if sel.any():
            out[k] = np.median(flux[sel] * np.sqrt(ivar[sel]))
    return out


def _write_batch(batch: Batch, pop: Population, writer: SpecLiteWriter,
                 spectra_dir: Path, sn: np.ndarray, version: str) -> int:
    """Cut each spectrum to its pixel range, record its S/N, write its file."""
    written = 0
    for k, i in enumerate(batch.index):
        lo, hi = pop.start[i], pop.stop[i] + 1
        rows = np.zeros(hi - lo, dtype=COADD_DTYPE)
        rows["flux"] = batch.flux[k, lo:hi]
        rows["loglam"] = LOGLAM[lo:hi]
        rows["ivar"] = batch.ivar[k, lo:hi]
        rows["and_mask"] = batch.and_mask[k, lo:hi]
        rows["or_mask"] = batch.or_mask[k, lo:hi]
        rows["wdisp"] = batch.wdisp[k, lo:hi]
        rows["sky"] = batch.sky[k, lo:hi]
        rows["model"] = batch.model[k, lo:hi]
        # The catalogue S/N is recomputed from the stored float32 columns, so a reader
        # of the file gets exactly the catalogue value back.
        sn[i] = median_sn(rows["flux"], rows["ivar"])
        if not pop.has_spectrum[i]:
            continue
        good = rows["ivar"] > 0
        wave = 10.0 ** rows["loglam"].astype(np.float64)
        # the pipeline classifies what the object is; the catalogue took it for a quasar
        kind = contaminants.OBJECT_CLASSES[pop.objects.object_class[i]]
        subclass = "BROADLINE" if kind == "QSO" else ""
        pipeline_z = pop.z[i] if kind != "QSO" else pop.z_cat[i]
        spall = np.zeros(1, dtype=SPALL_DTYPE)
        spall[0] = (
            "eboss", "eboss" if pop.plate[i] >= 7566 else "boss", "good", pop.platesn2[i], 1,
            pop.plate[i], pop.tile[i], pop.mjd[i], pop.fiberid[i], RUN2D, "v5_13_2", "QSO",
            pop.ra[i], pop.dec[i], kind, subclass, pipeline_z,
            2e-4 * (1 + pipeline_z), wave[good][0], wave[good][-1], 0,
            _band_sn(wave, rows["flux"].astype(np.float64), rows["ivar"].astype(np.float64)),
            sn[i], pop.thing_id[i] % 2**31,
        )
        meta = {
            "PLATE": pop.plate[i], "MJD": pop.mjd[i], "FIBERID": pop.fiberid[i],
            "TILE": pop.tile[i], "EXPTIME": 900.0 * (3 + i % 4), "NEXP": 3 + i % 4,
            "COEFF0": LOGLAM[lo], "PLUG_RA": pop.ra[i], "PLUG_DEC": pop.dec[i],
            "THING_ID": pop.thing_id[i], "VERSION": version,
        }
        name = spec_name(int(pop.plate[i]), int(pop.mjd[i]), int(pop.fiberid[i]))
        writer.write(spectra_dir / name, meta, rows, spall)
        written += 1
    return written


def simulate_survey(
    n: int,
    seed: int,
    out_dir: Path,
    *,
    overwrite: bool = False,
    missing_spectrum_fraction: float = 0.01,
    progress: Callable[[str], None] | None = print_to_stderr,
    batch_size: int = 256,
    contaminant_fractions: ContaminantFractions | None = None,
) -> dict:
    """Simulate ``n`` DR16Q-like catalogue rows and write spectra, truth, catalogue and
    SURVEY.json; ``contaminant_fractions`` sets how many are stars, galaxies and artefacts.

    Deterministic for a given ``seed`` and independent of ``batch_size``. Raises
    FileExistsError if ``out_dir`` is non-empty and ``overwrite`` is False. Returns a
    summary dict (counts, paths, seconds, spectra per second).
    """
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    if not 0.0 <= missing_spectrum_fraction < 1.0:
        raise ValueError(f"missing_spectrum_fraction not in [0, 1): {missing_spectrum_fraction}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    report = progress or (lambda _message: None)
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    spectra_dir = _prepare(out_dir, overwrite)
    survey_stream, pixel_stream = np.random.SeedSequence(seed).spawn(2)
    fractions = contaminant_fractions or ContaminantFractions()
    lib, inst = library(), instrument.load_data("boss")
    pop = draw_population(np.random.default_rng(survey_stream), n, missing_spectrum_fraction,
                          lib, fractions)
    seeds = pixel_stream.spawn(n)
    writer, version = SpecLiteWriter(), _version()
    sn, amplitude, mags = np.zeros(n), np.zeros(n), np.zeros((n, len(BANDS)))
    written = 0
    for lo in range(0, n, batch_size):
        index = np.arange(lo, min(n, lo + batch_size))
        batch = render_batch(pop, index, seeds, lib, inst)
        amplitude[index], mags[index] = batch.amplitude, batch.photometry
        written += _write_batch(batch, pop, writer, spectra_dir, sn, version)
        done, elapsed = index[-1] + 1, time.perf_counter() - t0
        report(f"simulate: {done}/{n} spectra, {done / elapsed:.0f} spectra/s")
    write_table(out_dir / TRUTH_NAME, truth_columns(pop, sn, amplitude), "TRUTH")
    write_catalog(out_dir / CATALOG_NAME, catalogue_columns(pop, sn, mags))
    counts = {
        "catalog_rows": n,
        "spectra": written,
        "missing_spectra": int(n - written),
        "bal": int(pop.is_bal.sum()),
        "bal_bi_civ_positive": int((pop.bi_civ > 0).sum()),
        "dla_sightlines": int((pop.n_dla > 0).sum()),
        "partial_lls": int(np.isfinite(pop.lls_z).sum()),
        "xray": int(pop.has_xray.sum()),
        "sn_median_all_ge_10": int((sn >= 10).sum()),
        **{key: int((pop.objects.object_class == code).sum()) for key, code in
           (("quasars", contaminants.QSO), ("stars", contaminants.STAR),
            ("galaxies", contaminants.GALAXY))},
        **{name: int((pop.objects.artefact == code).sum())
           for code, name in enumerate(contaminants.ARTEFACTS) if code},
    }
    survey = {
        "n": n, "seed": seed, "missing_spectrum_fraction": missing_spectrum_fraction,
        "counts": counts, "generator": GENERATOR,
        "contaminant_fractions": dataclasses.asdict(fractions),
        "package_data": {"templates": lib.attrs.get("created", ""),
                         "instrument": inst.created},
        "software": {"qsocube": version, "numpy": np.__version__, "astropy": astropy.__version__},
        "files": {"spectra": f"{SPECTRA_DIR}/spec-PPPP-MMMMM-FFFF.fits",
                  "catalog": CATALOG_NAME, "truth": TRUTH_NAME},
    }
    fidelity = resources.files("qsocube.builder.simulate").joinpath("data", "fidelity.json")
    if fidelity.is_file():  # measured by bench/fidelity.py on the real held-out quasars
        survey["fidelity"] = json.loads(fidelity.read_text())
    write_text_atomic(out_dir / SURVEY_NAME, json.dumps(survey, indent=2, sort_keys=True) + "\n")
    seconds = time.perf_counter() - t0
    report(f"simulate: wrote {written} spectra of {n} catalogue rows ({counts['quasars']} quasars, "
           f"{counts['stars']} stars, {counts['galaxies']} galaxies, "
           f"{sum(counts[a] for a in contaminants.ARTEFACTS[1:])} artefacts) to {spectra_dir}, "
           f"the catalogue {out_dir / CATALOG_NAME} and the truth table {out_dir / TRUTH_NAME} "
           f"in {seconds:.1f} s")
    return {
        **counts, "n": n, "seed": seed, "seconds": seconds,
        "spectra_per_second": n / seconds, "out_dir": str(out_dir),
        "spectra_dir": str(spectra_dir), "catalog": str(out_dir / CATALOG_NAME),
        "truth": str(out_dir / TRUTH_NAME), "survey_json": str(out_dir / SURVEY_NAME),
    }
