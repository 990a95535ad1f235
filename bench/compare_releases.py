"""Compare two releases: equal apart from the fields that name a version or a moment.

    .venv/bin/python -m bench.compare_releases RELEASE_A RELEASE_B

Compares every dataset of the two cubes (values, dtypes, shapes) and every attribute, the
ONNX graphs (nodes and weights) and their metadata, and the value-added catalogue (FITS
columns, units, descriptions and data; the CSV byte for byte). Differences in the fields
listed below are expected (a new product version writes its version, time and commit, and
the simulated spectra record the version that wrote them, so every checksum of an input
or of a file holding a version differs too) and are reported separately; any other
difference makes the exit code 1. Made for the 0.2.0 -> 0.3.0 restructuring (issue #10):
the second release may have datasets the first lacks (``NEW_DATASETS``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import h5py
import numpy as np

# Attributes that carry a version, a time, a commit, or the checksum of something that does.
EXPECTED_ATTRS = {
    "/": {"product_version", "schema_version", "software_version", "git_commit", "created",
          "history", "inputs_sha256"},
    "models": {"trained_on_cube_sha256", "encoder_sha256", "decoder_sha256", "train_config"},
}
# Datasets whose values are checksums of the input files (the simulator writes its version
# into each spectrum's header, QCVERS), and the search calls' wall times.
EXPECTED_DATASETS = {"/source_sha256"} | {f"/models/latent_{n:02d}/search/seconds"
                                          for n in (3, 6, 9, 12, 15)}
# JSON attributes and metadata compared without their checksum of the cube.
JSON_WITH_CUBE_SHA = {"train_config"}
# Keys of a spectrum file's headers that record the software that wrote it.
EXPECTED_SPECTRUM_CARDS = {"QCVERS", "SIMULATD"}
NEW_DATASETS = {"/rejected/reason_code", "/masked_values"}
# Attributes the second release may have that the first lacks (issue #13: the original name
# of each /truth column, the count of spectra without a truth row).
NEW_ATTRS = {"original_name", "n_missing"}
EXPECTED_ONNX_METADATA = {"product_version", "schema_version", "cube_sha256", "train_config",
                          # its text names the preprocessing functions by module path,
                          # which moved (qsocube.preprocess -> qsocube.core.preprocess)
                          "input_layout"}
EXPECTED_VAC_HEADER = {"PRODVER", "SCHEMAV", "CUBESHA"}


def _equal(a: np.ndarray, b: np.ndarray) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype.kind == "f":
        return bool(np.array_equal(a, b, equal_nan=True))
    return bool(np.array_equal(a, b))


def _attr(value: object) -> object:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def compare_cubes(a: Path, b: Path) -> tuple[list[str], list[str]]:
    """(unexpected differences, expected ones) between two cubes."""
    bad: list[str] = []
    expected: list[str] = []
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        names_a: dict[str, object] = {}
        names_b: dict[str, object] = {}
        fa.visititems(lambda n, o: names_a.__setitem__("/" + n, o))
        fb.visititems(lambda n, o: names_b.__setitem__("/" + n, o))
        for name in sorted(set(names_a) | set(names_b)):
            if name not in names_b:
                bad.append(f"cube {name}: only in the first release")
                continue
            if name not in names_a:
                (expected if name in NEW_DATASETS else bad).append(
                    f"cube {name}: only in the second release")
                continue
            oa, ob = names_a[name], names_b[name]
            if isinstance(oa, h5py.Dataset):
                va, vb = oa[...], ob[...]
                if va.dtype.kind == "O" or h5py.check_string_dtype(oa.dtype):
                    va, vb = oa.asstr()[...] if oa.size else va, ob.asstr()[...] if ob.size else vb
                    same = va.shape == vb.shape and bool(np.all(va == vb))
                else:
                    same = _equal(va, vb)
                if not same:
                    (expected if name in EXPECTED_DATASETS else bad).append(
                        f"cube {name}: values differ")
            group = "models" if name.startswith("/models/latent_") and name.count("/") == 2 \
                else name
            _compare_attrs(f"cube {name}", oa.attrs, ob.attrs,
                           EXPECTED_ATTRS.get(group, set()), bad, expected)
        _compare_attrs("cube /", fa.attrs, fb.attrs, EXPECTED_ATTRS["/"], bad, expected)
    return bad, expected


def _compare_attrs(where: str, a, b, allowed: set[str], bad: list[str], expected: list[str]
                   ) -> None:
    for key in sorted(set(a) | set(b)):
        if key in ("DIMENSION_LIST", "REFERENCE_LIST"):  # object references, file-specific
            continue
        va = _attr(a[key]) if key in a else None
        vb = _attr(b[key]) if key in b else None
        if va != vb:
            if va is None and key in NEW_ATTRS:
                expected.append(f"{where} attribute {key} is new")
            elif key in JSON_WITH_CUBE_SHA and _without_cube_sha(va) != _without_cube_sha(vb):
                bad.append(f"{where} attribute {key} differs beyond its cube_sha256")
            else:
                (expected if key in allowed else bad).append(f"{where} attribute {key} differs")


def _without_cube_sha(text: object) -> object:
    import json

    try:
        value = json.loads(str(text))
    except ValueError:
        return text
    return {k: v for k, v in value.items() if k != "cube_sha256"}


def compare_onnx(a: Path, b: Path) -> tuple[list[str], list[str]]:
    import onnx

    bad: list[str] = []
    expected: list[str] = []
    files = sorted(p.name for p in a.glob("*.onnx"))
    if files != sorted(p.name for p in b.glob("*.onnx")):
        return [f"models: different files {files}"], expected
    for name in files:
        ma, mb = onnx.load(str(a / name)), onnx.load(str(b / name))
        if ma.graph.SerializeToString() != mb.graph.SerializeToString():
            bad.append(f"models/{name}: graph (nodes or weights) differs")
        meta_a = {p.key: p.value for p in ma.metadata_props}
        meta_b = {p.key: p.value for p in mb.metadata_props}
        for key in sorted(set(meta_a) | set(meta_b)):
            va, vb = meta_a.get(key), meta_b.get(key)
            if key in JSON_WITH_CUBE_SHA and va != vb:
                same = _without_cube_sha(va) == _without_cube_sha(vb)
            elif key == "input_layout" and va and vb:  # module path in the text only
                same = va.replace("qsocube.preprocess", "qsocube.core.preprocess") == vb
            else:
                same = va == vb
            if va != vb:
                (expected if same or key in EXPECTED_ONNX_METADATA and key != "input_layout"
                 and key not in JSON_WITH_CUBE_SHA else bad).append(
                    f"models/{name}: metadata {key} differs")
    return bad, expected


def compare_vac(a: Path, b: Path) -> tuple[list[str], list[str]]:
    from astropy.io import fits

    bad: list[str] = []
    expected: list[str] = []
    with fits.open(a / "qsocube_vac.fits") as ha, fits.open(b / "qsocube_vac.fits") as hb:
        ta, tb = ha["QSOCUBE_VAC"], hb["QSOCUBE_VAC"]
        if ta.columns.names != tb.columns.names:
            bad.append("VAC: column names differ")
        for ca, cb in zip(ta.columns, tb.columns, strict=False):
            if (ca.format, ca.unit, ca.null) != (cb.format, cb.unit, cb.null):
                bad.append(f"VAC {ca.name}: format, unit or TNULL differs")
            if not _equal(np.asarray(ta.data[ca.name]), np.asarray(tb.data[cb.name])):
                bad.append(f"VAC {ca.name}: values differ")
        for key in sorted(set(ta.header) | set(tb.header)):
            if ta.header.get(key) != tb.header.get(key):
                (expected if key in EXPECTED_VAC_HEADER else bad).append(
                    f"VAC header {key} differs")
    if (a / "qsocube_vac.csv").read_bytes() != (b / "qsocube_vac.csv").read_bytes():
        bad.append("VAC CSV differs")
    return bad, expected


def compare_spectra(a: Path, b: Path) -> tuple[list[str], list[str]]:
    """The simulated input spectra: same files, same data, same header cards but the ones
    naming the software that wrote them."""
    from astropy.io import fits

    bad: list[str] = []
    expected: list[str] = []
    names = sorted(p.name for p in a.glob("spec-*.fits"))
    if names != sorted(p.name for p in b.glob("spec-*.fits")):
        return ["input/spectra: different files"], expected
    for name in names:
        with fits.open(a / name) as ha, fits.open(b / name) as hb:
            for hdu_a, hdu_b in zip(ha, hb, strict=True):
                if hdu_a.data is not None and hdu_a.data.tobytes() != hdu_b.data.tobytes():
                    bad.append(f"input/spectra/{name}: data of HDU {hdu_a.name} differ")
                cards = {k for k in set(hdu_a.header) | set(hdu_b.header)
                         if hdu_a.header.get(k) != hdu_b.header.get(k)
                         or hdu_a.header.comments[k] != hdu_b.header.comments[k]}
                if cards - EXPECTED_SPECTRUM_CARDS:
                    bad.append(f"input/spectra/{name}: header cards {sorted(cards)} differ")
                elif cards:
                    expected.append(f"input/spectra/*: header cards {sorted(cards)} differ")
    return bad, expected


def compare(a: Path, b: Path) -> tuple[list[str], list[str]]:
    bad, expected = compare_cubes(a / "qsocube.h5", b / "qsocube.h5")
    for part in (compare_onnx(a / "models", b / "models"),
                 compare_vac(a / "catalog", b / "catalog"),
                 compare_spectra(a / "input" / "spectra", b / "input" / "spectra")):
        bad += part[0]
        expected += part[1]
    return bad, expected


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.compare_releases")
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    args = parser.parse_args()
    bad, expected = compare(args.first, args.second)
    print(f"expected differences (versions, times, commits and checksums of them): "
          f"{len(set(expected))}")
    for line in sorted(set(expected)):
        print(f"  {line}")
    print(f"unexpected differences: {len(bad)}")
    for line in bad:
        print(f"  {line}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
