"""The release pipeline: every stage for one profile, resumable stage by stage.

This layer sits above the stages (builder, analysis) and below the command line
(``qsocube release``, ``make product``).

simulate -> build -> train -> analyze -> manifest. Each stage records what it was made
from in RELEASE/.state/stages.json (inputs, configuration and the software version); a
rerun skips a stage whose record is unchanged, and a killed run leaves only complete files
under their final names.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path

from qsocube import __version__
from qsocube.analysis import analyze_release
from qsocube.builder.build import BuildConfig, build_cube
from qsocube.core import layout
from qsocube.core.atomic import (
    claim_folder,
    exclusive,
    remove_stale_partials,
    write_text_atomic,
)
from qsocube.core.cube import file_sha256
from qsocube.core.defaults import LATENT_SIZES, load_profiles
from qsocube.core.errors import ReleaseError, UsageError
from qsocube.core.inputs import find_inputs
from qsocube.core.parallel import default_processes
from qsocube.core.progress import say
from qsocube.core.validate import release_files, validate


def _digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def simulate_key(settings: dict) -> str:
    """What the simulated survey is made from: its size, its seed and this software."""
    return _digest({"n_quasars": settings["n_quasars"], "seed": settings["seed"],
                    "software_version": __version__})


def build_key(config_json: str, simulate_record: str | None, spectra: Path,
              catalog: Path | None) -> str:
    """What the cube is made from: the build configuration, the inputs and this software."""
    return _digest({"config": config_json, "simulate": simulate_record,
                    "software_version": __version__, "spectra": str(spectra),
                    "catalog": str(catalog)})


class StageState:
    """What each stage of a release was made from (RELEASE/.state/stages.json)."""

    def __init__(self, release: Path) -> None:
        self.path = layout.Release(release).state / layout.STAGES_FILE
        self.done = json.loads(self.path.read_text()) if self.path.exists() else {}

    def is_done(self, stage: str, key: str) -> bool:
        return self.done.get(stage) == key

    def mark(self, stage: str, key: str) -> None:
        self.done[stage] = key
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.path, json.dumps(self.done, indent=2, sort_keys=True))


def write_manifest(release: Path) -> Path:
    """MANIFEST.sha256 of every release file (``sha256sum -c`` reads it)."""
    lines = [f"{file_sha256(p)}  {p.relative_to(release)}" for p in release_files(release)]
    target = layout.Release(release).manifest
    write_text_atomic(target, "\n".join(lines) + "\n")
    return target


# What a release folder holds besides the simulated input (its own marker names the tool).
RELEASE_PATTERNS = (layout.CUBE_NAME, f"{layout.MODELS_DIR}/*.onnx",
                    f"{layout.REPORT_DIR}/*", f"{layout.CATALOG_DIR}/*", layout.MANIFEST,
                    f"{layout.STATE_DIR}/*")


def check_release(profile: str, release: Path, settings: dict, spectra: Path | None,
                  catalog: Path | None) -> None:
    """Every option of a release, checked before any work starts (UsageError, one line)."""
    profiles = load_profiles()
    if profile not in profiles:
        raise UsageError(f"unknown profile {profile!r}; choose from {', '.join(profiles)}")
    for key in ("n_calls", "max_epochs"):
        if not isinstance(settings.get(key), int) or settings[key] < 1:
            raise UsageError(f"{key} must be a positive integer, got {settings.get(key)!r}")
    if release.exists() and not release.is_dir():
        raise UsageError(f"{release}: exists and is not a folder")
    if catalog is not None and spectra is None:
        raise UsageError("--catalog goes with --spectra (the simulated survey has its own)")
    if spectra is not None:
        find_inputs([spectra])  # MissingInputError (one line) if it finds nothing
    if catalog is not None:
        from qsocube.builder.dr16q import check_catalog

        check_catalog(catalog)  # CatalogError (one line) if it cannot be read


def run_release(profile: str, release: Path, *, overrides: dict | None = None,
                spectra: Path | None = None, catalog: Path | None = None,
                report: Callable[[str], None] = say) -> dict:
    """Build the release of ``profile`` into ``release``; returns a summary.

    Every option is checked first (``check_release``). The folder must be new, empty or a
    release (``atomic.claim_folder``: nothing of anyone else's is replaced or deleted), and
    one run at a time writes it (``atomic.exclusive``).
    """
    settings = {**load_profiles().get(profile, {}), **(overrides or {})}
    check_release(profile, release, settings, spectra, catalog)
    claim_folder(release, "release", RELEASE_PATTERNS,
                 legacy=(f"{layout.STATE_DIR}/{layout.STAGES_FILE}",))
    with exclusive(release, "this release"):
        return _run_release(profile, release, settings, spectra, catalog, report)


def _run_release(profile: str, release: Path, settings: dict, spectra: Path | None,
                 catalog: Path | None, report: Callable[[str], None]) -> dict:
    started = time.perf_counter()
    remove_stale_partials(release, report)
    state = StageState(release)
    paths = layout.Release(release)
    cube = paths.cube
    truth = None
    if spectra is None:
        survey = layout.Survey(paths.input)
        key = simulate_key(settings)
        if not state.is_done("simulate", key):
            from qsocube.builder.simulate import simulate_survey

            report(f"[1/5] simulating {settings['n_quasars']} quasars into {survey.folder}")
            simulate_survey(settings["n_quasars"], settings["seed"], survey.folder,
                            overwrite=True)
            state.mark("simulate", key)
        spectra, catalog, truth = survey.spectra, survey.catalog, survey.truth
    config = BuildConfig()
    key = build_key(config.to_json(), state.done.get("simulate"), spectra, catalog)
    if not (state.is_done("build", key) and cube.exists()):
        report(f"[2/5] building {cube}")
        build_cube([spectra], cube, catalog_path=catalog, truth_path=truth, config=config,
                   source="simulated" if truth else "SDSS", overwrite=True,
                   processes=default_processes())
        state.mark("build", key)
        state.done.pop("analyze", None)
    report("[3/5] training (resumes finished latent sizes and search calls)")
    from qsocube.builder.train import train_release

    train_release(cube, paths.models, paths.state, latent_sizes=LATENT_SIZES,
                  n_calls=settings["n_calls"], max_epochs=settings["max_epochs"],
                  batch_size=settings["batch_size"], seed=settings["seed"],
                  dropout=settings["dropout"],
                  decoder_dropout=settings.get("decoder_dropout"))
    report("[4/5] analysing")
    analyze_release(release)
    report("[5/5] writing the manifest and validating")
    manifest = write_manifest(release)
    problems = validate(release)
    if problems:
        raise ReleaseError(f"{release} failed validation: {problems[0]}")
    seconds = round(time.perf_counter() - started, 1)
    report(f"Release '{profile}' complete in {seconds} s: the cube {cube}, ten ONNX models in "
        f"{paths.models}, the report {paths.report_index}, the catalogue "
        f"{paths.catalog}, and checksums of every file in {manifest}; "
        f"`qsocube validate {release}` passes.")
    return {"release": str(release), "seconds": seconds}
