"""Fidelity of the simulated survey: real SDSS quasars against a release's simulated ones.

    python -m bench.fidelity [--release products/default] [--shared ../shared/data]
                             [--surveys N] [--record]

Measured on the real quasars of ../shared/data/sdss held out of every fit behind the
simulator (``qsocube.builder.simulate.templates.held_out``: the position rounded to 1 arcmin
hashes below 0.4), against the release's simulated normal quasars (no contaminant, no
artefact): the test split where a model's figures are judged, all of them as candidate
matches for the two-sample test, which judges the simulator. Every real spectrum goes
through the product's own reader, resampling and encoder, like a user's.

1. **Classifier two-sample test**: each real quasar is matched to its 3 nearest simulated
   normal quasars (any split) in (log(1 + z), log S/N), seen only where the real one has
   data; gradient boosting and logistic regression (on 20 principal components) try to
   tell them apart from the normalised flux in 150 log-wavelength bins;
   5-fold cross-validated AUC, a real quasar and its matches always in the same fold, and
   so are real quasars that share a match (``shared_match_groups``). 0.5 =
   indistinguishable; the larger of the two classifiers' AUCs is the figure. Which
   simulated spectra a survey offers as matches moves it (sd 0.02, 0.69-0.75 over six
   surveys of survey 3), so ``--surveys N`` (6 in `make bench`'s full size) repeats the
   test on N fresh surveys of the default profile's size (the profile's seed + 1 ... + N;
   simulated and built, no models, about a minute each) and reports their mean: the
   simulator's figure, beside the release's.
2. **Composites**: median rest-frame stacks by redshift bin, real and simulated, against
   Vanden Berk et al. (2001) and Harris et al. (2016): the mean |stack / composite - 1|
   over line and continuum windows.
3. **Reconstruction**: per redshift bin, the median reduced chi-square of the release's
   9-dimensional model on real quasars with S/N >= 10 over that of their 5 nearest simulated
   test quasars in (log(1 + z), log S/N).
4. **Latent redshift**: the share of real quasars (S/N >= 10) for which the median true
   redshift of their 15 nearest simulated quasars in the 9-dimensional latent space is
   within 0.1 (1 + z) of their own.

Targets (issue #11): AUC <= 0.70; chi-square ratio <= 1.3 and latent-redshift share >= 90%
in every bin with 10 or more real quasars, and overall. ``--record`` writes the figures to
the simulator's package data (``data/fidelity.json``), where the release report finds them.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import warnings
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LATENT = 9
Z_BINS = ((0.0, 1.0), (1.0, 7.0))
FEATURE_BINS = 150
STACK_BINS = (((0.1, 0.5), (4150.0, 4250.0),
               ((3300, 3600), (3600, 4000), (4200, 4300), (4800, 4900), (5100, 5500))),
              ((0.5, 1.5), (3000.0, 3100.0),
               ((1880, 1940), (2100, 2300), (2750, 2850), (3300, 3600), (3600, 4000))),
              ((1.9, 3.3), (1450.0, 1500.0),
               ((1230, 1260), (1380, 1420), (1520, 1580), (1680, 1720), (1880, 1940))))
# fresh surveys the simulator's mean two-sample AUC is taken over, by `make bench` size
FRESH_SURVEYS = {"small": 0, "full": 6}
TARGETS = {"auc": 0.70, "chi2_ratio": 1.3, "latent_z_share": 0.90}
RECORD = ROOT / "qsocube" / "builder" / "simulate" / "data" / "fidelity.json"


def real_quasars(shared: Path) -> list[dict]:
    """The held-out real quasars of the MANIFEST (file, z, S/N)."""
    from qsocube.builder.simulate.templates import held_out

    rows = list(csv.DictReader(open(shared / "sdss" / "MANIFEST.csv")))
    return [{"path": shared / "sdss" / "spectra" / r["file"], "z": float(r["Z"]),
             "sn": float(r["SN_MEDIAN_ALL"])}
            for r in rows if r["CLASS"] == "QSO" and held_out(r["RA"], r["DEC"])]


def real_model_input(paths: list[Path]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, w, covered fraction) on the product grid, through the product's own reader."""
    from qsocube.core.grid import DEFAULT_GRID
    from qsocube.core.prepare import prepare
    from qsocube.core.preprocess import model_input
    from qsocube.core.speclite import read_spec_lite

    prepared = prepare([read_spec_lite(p) for p in paths], DEFAULT_GRID)
    x, w = model_input(prepared.flux, prepared.ivar, prepared.mask, prepared.norm)
    return x, w, prepared.covered_fraction


def simulated(release: Path, models: bool = True) -> dict[str, np.ndarray]:
    """The release's simulated normal quasars: model input, truth, and (``models``) latents
    and chi-square."""
    from qsocube.core.anomaly import normal_quasars
    from qsocube.core.cube import model_input_from_cube

    with h5py.File(release / "qsocube.h5", "r") as cube:
        truth = cube["truth"]
        normal = normal_quasars(truth["OBJECT_CLASS"].asstr()[...],
                                truth["ARTEFACT"].asstr()[...])
        rows = np.flatnonzero(normal)
        x, w = model_input_from_cube(cube, rows)
        out = {"x": x, "w": w, "z": truth["Z"][rows], "split": cube["split"][rows],
               "sn": cube["catalog/SN_MEDIAN_ALL"][rows]}
        if models:
            group = cube[f"models/latent_{LATENT:02d}"]
            out.update(latent=group["latent_mean"][rows], chi2=group["recon_chi2"][rows])
        return out


def features(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Normalised flux averaged in FEATURE_BINS log-wavelength bins (0 where none valid)."""
    edges = np.linspace(0, x.shape[1], FEATURE_BINS + 1).astype(int)
    valid = (w > 0).astype(np.float32)
    num = np.add.reduceat(x * valid, edges[:-1], axis=1)
    den = np.add.reduceat(valid, edges[:-1], axis=1)
    return np.where(den > 0, num / np.maximum(den, 1), 0.0)


def nearest(real_z: np.ndarray, real_sn: np.ndarray, sim_z: np.ndarray, sim_sn: np.ndarray,
            k: int) -> np.ndarray:
    """Indices (n_real, k) of the k simulated spectra nearest in (log(1+z), log S/N / 4):
    redshift matters most, S/N within a factor of a few."""
    d = ((np.log10(1 + real_z)[:, None] - np.log10(1 + sim_z)[None, :]) ** 2
         + (0.25 * (np.log10(np.maximum(real_sn, 0.1))[:, None]
                    - np.log10(np.maximum(sim_sn, 0.1))[None, :])) ** 2)
    return np.argsort(d, axis=1)[:, :k]


def _latent_z_match(latent: np.ndarray, z: np.ndarray, reference_latent: np.ndarray,
                    reference_z: np.ndarray, k: int = 15) -> np.ndarray:
    """Whether the median redshift of each code's k nearest reference codes is within
    0.1 (1 + z) of its own."""
    d = ((latent[:, None, :] - reference_latent[None, :, :]) ** 2).sum(-1)
    z_nn = np.median(reference_z[np.argsort(d, axis=1)[:, :k]], axis=1)
    return np.abs(z_nn - z) <= 0.1 * (1 + z)


def shared_match_groups(match: np.ndarray) -> np.ndarray:
    """A cross-validation group per real quasar: real quasars that share a simulated match
    (directly or through others) are one group. Low-redshift simulated quasars are few,
    so many real ones are matched to the same spectra; split across folds, a classifier
    would recognise a spectrum it was trained on rather than tell real from simulated."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n_real = len(match)
    sims = np.unique(match, return_inverse=True)[1].ravel()
    owner = np.repeat(np.arange(n_real), match.shape[1])
    size = n_real + int(sims.max()) + 1
    graph = coo_matrix((np.ones(len(sims)), (owner, n_real + sims)), shape=(size, size))
    return connected_components(graph, directed=False)[1][:n_real]


def two_sample_auc(real: np.ndarray, sim: np.ndarray, groups_real: np.ndarray,
                   groups_sim: np.ndarray) -> dict:
    from sklearn.decomposition import PCA
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X = np.vstack([real, sim])
    y = np.r_[np.zeros(len(real)), np.ones(len(sim))]
    groups = np.r_[groups_real, groups_sim]
    folds = StratifiedGroupKFold(5, shuffle=True, random_state=0)
    out = {}
    for name, clf in (("logistic_pca20", make_pipeline(StandardScaler(), PCA(20, random_state=0),
                                                       LogisticRegression(C=0.3, max_iter=3000))),
                      ("gradient_boosting", HistGradientBoostingClassifier(max_iter=150,
                                                                           random_state=0))):
        p = cross_val_predict(clf, X, y, cv=folds, groups=groups, method="predict_proba")[:, 1]
        out[name] = round(float(roc_auc_score(y, p)), 3)
    out["auc"] = max(out["logistic_pca20"], out["gradient_boosting"])
    return out


def matched_two_sample(real: dict[str, np.ndarray], sim: dict[str, np.ndarray]) -> dict:
    """The two-sample AUC of real quasars against their 3 nearest simulated normal quasars
    in (redshift, S/N). Every simulated normal quasar is a candidate (the test compares the
    simulator's draws, not the models, so the training split's are as good), which keeps
    matches distinct; each match is seen only where its real quasar has data, so that
    coverage (an SDSS-I/II spectrum's missing blue end) is not what tells them apart."""
    match = nearest(real["z"], real["sn"], sim["z"], sim["sn"], 3)
    covered = np.repeat(real["w"] > 0, 3, axis=0)
    group = shared_match_groups(match)
    out = two_sample_auc(features(real["x"], real["w"]),
                         features(sim["x"][match.ravel()],
                                  np.where(covered, sim["w"][match.ravel()], 0)),
                         group, np.repeat(group, 3))
    out.update(groups=int(len(np.unique(group))), distinct_matches=int(len(np.unique(match))))
    return out


def simulator_two_sample(real: dict[str, np.ndarray], seeds: list[int], n: int,
                         folder: Path) -> dict:
    """The same two-sample test on fresh surveys of the default profile's size (simulated
    and built, no models): one survey's matched spectra move the AUC (sd ~0.02), so the
    simulator is judged by the mean over several."""
    from qsocube.builder.build import build_cube
    from qsocube.builder.simulate import simulate_survey

    per_seed = []
    for seed in seeds:
        survey = folder / f"survey_{seed}"
        simulate_survey(n, seed, survey, progress=None)
        cube = survey / "qsocube.h5"
        build_cube([survey / "spectra"], cube, catalog_path=survey / "DR16Q_v4.fits",
                   truth_path=survey / "truth.fits", report=lambda _: None)
        per_seed.append({"seed": seed, **matched_two_sample(real, simulated(cube.parent,
                                                                            models=False))})
    aucs = np.array([r["auc"] for r in per_seed])
    return {"n_quasars": n, "surveys": per_seed, "mean_auc": round(float(aucs.mean()), 3),
            "sd_auc": round(float(aucs.std(ddof=1)), 3) if len(aucs) > 1 else None}


def rest_stack(x: np.ndarray, w: np.ndarray, z: np.ndarray, norm: tuple[float, float],
               grid: np.ndarray) -> np.ndarray:
    from qsocube.core.grid import DEFAULT_GRID

    rows = []
    for xi, wi, zi in zip(x, w, z, strict=True):
        good = wi > 0
        rest = DEFAULT_GRID.wavelength[good] / (1 + zi)
        f = np.interp(grid, rest, xi[good], left=np.nan, right=np.nan)
        level = np.nanmedian(f[(grid > norm[0]) & (grid < norm[1])])
        if np.isfinite(level) and level > 0:
            rows.append(f / level)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(np.array(rows), axis=0) if rows else np.full(grid.shape, np.nan)


def composites(shared: Path, real: dict, sim: dict) -> dict:
    from astropy.io import fits

    grid = np.arange(1150.0, 5600.0, 2.0)
    wave, flux = np.loadtxt(shared / "composites" / "qso_temp_vandenberk2001.mrt.txt",
                            skiprows=23, usecols=(0, 1), unpack=True)
    harris = fits.getdata(shared / "composites" / "harris15_composite.fits", 1)
    refs = {"vanden_berk_2001": np.interp(grid, wave, flux, left=np.nan, right=np.nan),
            "harris_2016": np.interp(grid, harris["WAVE"].astype(float),
                                     harris["FLUX"].astype(float), left=np.nan, right=np.nan)}
    out = {}
    for (lo, hi), norm, windows in STACK_BINS:
        entry = {}
        for label, data in (("real", real), ("simulated", sim)):
            use = (data["z"] >= lo) & (data["z"] < hi)
            stack = rest_stack(data["x"][use], data["w"][use], data["z"][use], norm, grid)
            entry[f"n_{label}"] = int(use.sum())
            for ref_name, ref in refs.items():
                ref = ref / np.nanmedian(ref[(grid > norm[0]) & (grid < norm[1])])
                ratios = [np.nanmean(stack[(grid > a) & (grid < b)])
                          / np.nanmean(ref[(grid > a) & (grid < b)]) for a, b in windows]
                finite = [r for r in ratios if np.isfinite(r)]
                entry[f"{label}_vs_{ref_name}"] = (round(float(np.mean(np.abs(np.array(finite)
                                                                             - 1))), 3)
                                                   if finite else None)
        out[f"z_{lo}_{hi}"] = entry
    return out


def run_fidelity(release: Path, shared: Path, surveys: int = 0) -> dict:
    from qsocube.inference import Encoder

    reals = real_quasars(shared)
    encoder = Encoder(release / "models" / f"infovae_latent{LATENT:02d}_encoder.onnx")
    encoded = encoder.encode_files([r["path"] for r in reals])
    ok = encoded.flag == 0
    reals = [r for r, keep in zip(reals, ok, strict=True) if keep]
    z = np.array([r["z"] for r in reals])
    sn = np.array([r["sn"] for r in reals])
    x, w, _ = real_model_input([r["path"] for r in reals])
    real = {"x": x, "w": w, "z": z, "sn": sn, "latent": encoded.latent_mean[ok],
            "chi2": encoded.recon_chi2[ok]}
    sim = simulated(release)
    test = sim["split"] == 2
    sim_test = {k: v[test] for k, v in sim.items()}
    result: dict = {"release": str(release), "real_held_out_encoded": int(ok.sum()),
                    "real_held_out_rejected": int((~ok).sum()),
                    "simulated_test_quasars": int(test.sum())}
    # 1. classifier two-sample test at matched redshift and S/N
    result["two_sample"] = matched_two_sample(real, sim)
    if surveys:
        from qsocube.core.defaults import load_profiles

        profile = load_profiles()["default"]
        seeds = [profile["seed"] + i for i in range(1, surveys + 1)]
        with tempfile.TemporaryDirectory(prefix="fidelity-") as folder:
            result["two_sample_fresh_surveys"] = simulator_two_sample(
                real, seeds, profile["n_quasars"], Path(folder))
    # 2. composites
    result["composites"] = composites(shared, real, sim_test)
    # 3. reconstruction chi-square, real (S/N >= 10) over matched simulated
    bright = sn >= 10
    rows = []
    for lo, hi in (*Z_BINS, (0.0, 7.0)):
        use = bright & (z >= lo) & (z < hi)
        entry = {"z": [lo, hi], "n_real": int(use.sum())}
        if use.any():
            matched = nearest(z[use], sn[use], sim_test["z"], sim_test["sn"], 5).ravel()
            entry["real_median_chi2"] = round(float(np.median(real["chi2"][use])), 3)
            entry["sim_median_chi2"] = round(float(np.median(sim_test["chi2"][matched])), 3)
            entry["chi2_ratio"] = round(entry["real_median_chi2"] / entry["sim_median_chi2"], 3)
            # 4. latent redshift: median z of the 15 nearest simulated quasars in latent space
            entry["latent_z_share"] = round(float(np.mean(_latent_z_match(
                real["latent"][use], z[use], sim["latent"], sim["z"]))), 3)
        # the same statistic for simulated test quasars among the training ones: what the
        # latent space itself resolves, whatever the survey's fidelity
        own = (sim_test["sn"] >= 10) & (sim_test["z"] >= lo) & (sim_test["z"] < hi)
        if own.any():
            training = sim["split"] == 0
            entry["simulated_latent_z_share"] = round(float(np.mean(_latent_z_match(
                sim_test["latent"][own], sim_test["z"][own], sim["latent"][training],
                sim["z"][training]))), 3)
        rows.append(entry)
    result["by_redshift"] = rows
    judged = [r for r in rows if r["n_real"] >= 10]
    result["targets"] = {
        f"two-sample AUC <= {TARGETS['auc']}": result["two_sample"]["auc"] <= TARGETS["auc"],
        f"chi2 ratio <= {TARGETS['chi2_ratio']} (bins with >= 10 real)":
            all(r["chi2_ratio"] <= TARGETS["chi2_ratio"] for r in judged),
        f"latent-z share >= {TARGETS['latent_z_share']:.0%} (bins with >= 10 real)":
            all(r["latent_z_share"] >= TARGETS["latent_z_share"] for r in judged),
    }
    return result


def run(size: str = "small", release: Path | None = None, shared: Path | None = None,
        surveys: int | None = None) -> dict:
    """The `make bench` entry: skipped, with the reason, without a release or ../shared."""
    release = release or ROOT / "products" / "default"
    shared = shared or ROOT.parent / "shared" / "data"
    if not (release / "qsocube.h5").is_file():
        return {"stage": "fidelity", "skipped": f"no release at {release} (make product first)"}
    if not (shared / "sdss" / "MANIFEST.csv").is_file():
        return {"stage": "fidelity", "skipped": f"{shared} absent: real spectra needed"}
    if surveys is None:
        surveys = FRESH_SURVEYS[size]
    return {"stage": "fidelity", **run_fidelity(release, shared, surveys)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fidelity", description=__doc__)
    parser.add_argument("--release", type=Path, default=ROOT / "products" / "default")
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--record", action="store_true",
                        help=f"write the figures to {RECORD.relative_to(ROOT)}")
    parser.add_argument("--surveys", type=int, default=FRESH_SURVEYS["full"],
                        help="fresh surveys (simulated and built, ~1 min each) to judge the "
                             "simulator's two-sample AUC by, besides the release's (0: none)")
    args = parser.parse_args(argv)
    result = run(release=args.release, shared=args.shared, surveys=args.surveys)
    print(json.dumps(result, indent=2))
    if "skipped" in result:
        return 1
    if args.record:
        from qsocube.builder.simulate.survey import GENERATOR
        from qsocube.core.atomic import write_text_atomic

        record = {"generator": GENERATOR, **{k: v for k, v in result.items() if k != "release"},
                  "targets": {k: bool(v) for k, v in result["targets"].items()}}
        write_text_atomic(RECORD, json.dumps(record, indent=2) + "\n")
        print(f"recorded in {RECORD}", file=sys.stderr)
    return 0 if all(result["targets"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
