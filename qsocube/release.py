"""`qsocube release`: the whole pipeline for one profile, resumable stage by stage.

simulate -> build -> train -> analyze -> manifest. Each stage records what it was made
from in RELEASE/.state/stages.json (inputs, configuration and the software version); a
rerun skips a stage whose record is unchanged, and a killed run leaves only complete files
under their final names.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
import tomllib
from importlib import resources
from pathlib import Path

from qsocube import __version__
from qsocube.atomic import remove_stale_partials, write_text_atomic
from qsocube.cube import file_sha256
from qsocube.parallel import default_processes
from qsocube.progress import say
from qsocube.validate import CUBE_NAME, MANIFEST, release_files, validate

LATENT_SIZES = (3, 6, 9, 12, 15)


def load_profiles() -> dict[str, dict]:
    return tomllib.loads(resources.files("qsocube").joinpath("profiles.toml").read_text())


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
    def __init__(self, release: Path) -> None:
        self.path = release / ".state" / "stages.json"
        self.done = json.loads(self.path.read_text()) if self.path.exists() else {}

    def is_done(self, stage: str, key: str) -> bool:
        return self.done.get(stage) == key

    def mark(self, stage: str, key: str) -> None:
        self.done[stage] = key
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.path, json.dumps(self.done, indent=2, sort_keys=True))


def write_manifest(release: Path) -> Path:
    lines = [f"{file_sha256(p)}  {p.relative_to(release)}" for p in release_files(release)]
    target = release / MANIFEST
    write_text_atomic(target, "\n".join(lines) + "\n")
    return target


def run_release(profile: str, release: Path, *, overrides: dict | None = None,
                spectra: Path | None = None, catalog: Path | None = None) -> dict:
    """Build the release of ``profile`` into ``release``; returns a summary."""
    from builder.build import BuildConfig, build_cube

    profiles = load_profiles()
    if profile not in profiles:
        raise ValueError(f"unknown profile {profile!r}; choose from {', '.join(profiles)}")
    settings = {**profiles[profile], **(overrides or {})}
    started = time.perf_counter()
    release.mkdir(parents=True, exist_ok=True)
    for stale in remove_stale_partials(release):
        say(f"removed a partial file left by an interrupted run: {stale}")
    state = StageState(release)
    cube = release / CUBE_NAME
    truth = None
    if spectra is None:
        survey = release / "input"
        key = simulate_key(settings)
        if not state.is_done("simulate", key):
            from builder.simulate import simulate_survey

            say(f"[1/5] simulating {settings['n_quasars']} quasars into {survey}")
            simulate_survey(settings["n_quasars"], settings["seed"], survey, overwrite=True)
            state.mark("simulate", key)
        spectra, catalog = survey / "spectra", survey / "DR16Q_v4.fits"
        truth = survey / "truth.fits"
    config = BuildConfig()
    key = build_key(config.to_json(), state.done.get("simulate"), spectra, catalog)
    if not (state.is_done("build", key) and cube.exists()):
        say(f"[2/5] building {cube}")
        build_cube([spectra], cube, catalog_path=catalog, truth_path=truth, config=config,
                   source="simulated" if truth else "SDSS", overwrite=True,
                   processes=default_processes())
        state.mark("build", key)
        state.done.pop("analyze", None)
    say("[3/5] training (resumes finished latent sizes and search calls)")
    from builder.train import train_release

    train_release(cube, release / "models", release / ".state", latent_sizes=LATENT_SIZES,
                  n_calls=settings["n_calls"], max_epochs=settings["max_epochs"],
                  batch_size=settings["batch_size"], seed=settings["seed"],
                  decoder_dropout=settings.get("decoder_dropout"))
    say("[4/5] analysing")
    from analysis.cli import analyze_release

    analyze_release(release)
    say("[5/5] writing the manifest and validating")
    manifest = write_manifest(release)
    problems = validate(release)
    if problems:
        raise RuntimeError(f"{release} failed validation: {problems[0]}")
    seconds = round(time.perf_counter() - started, 1)
    say(f"Release '{profile}' complete in {seconds} s: the cube {cube}, ten ONNX models in "
        f"{release / 'models'}, the report {release / 'report' / 'index.html'}, the catalogue "
        f"{release / 'catalog'}, and checksums of every file in {manifest}; "
        f"`qsocube validate {release}` passes.")
    return {"release": str(release), "seconds": seconds}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", default="default", choices=sorted(load_profiles()),
                        help="size of the release (see qsocube/profiles.toml)")
    parser.add_argument("--out", type=Path, help="release folder (default products/<profile>)")
    parser.add_argument("--spectra", type=Path, help="use real spec-lite files instead of a "
                        "simulated survey")
    parser.add_argument("--catalog", type=Path, help="DR16Q_v4.fits to go with --spectra")
    parser.add_argument("--calls", type=int, help="search calls per latent size (override)")
    parser.add_argument("--max-epochs", type=int, help="maximum epochs per call (override)")


def run(args: argparse.Namespace) -> int:
    overrides = {k: v for k, v in (("n_calls", args.calls), ("max_epochs", args.max_epochs))
                 if v is not None}
    run_release(args.profile, args.out or Path("products") / args.profile, overrides=overrides,
                spectra=args.spectra, catalog=args.catalog)
    return 0
