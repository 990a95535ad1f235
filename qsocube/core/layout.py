"""Every file and folder name of a release and of a simulated survey, in one place.

A release folder::

    RELEASE/qsocube.h5                                  the cube (CUBE_NAME)
    RELEASE/models/infovae_latentNN_{encoder,decoder}.onnx
    RELEASE/report/index.html, associations.csv, *.png
    RELEASE/catalog/qsocube_vac.fits, qsocube_vac.csv   the value-added catalogue
    RELEASE/MANIFEST.sha256                             sha256 of every file above
    RELEASE/.state/                                     resumable state (not in the manifest)
    RELEASE/input/                                      the simulated survey (not in the manifest)

A simulated survey (``RELEASE/input`` or ``qsocube simulate --out``)::

    SURVEY/spectra/spec-PPPP-MMMMM-FFFF.fits, SURVEY/DR16Q_v4.fits, truth.fits, SURVEY.json
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CUBE_NAME = "qsocube.h5"
MODELS_DIR = "models"
REPORT_DIR = "report"
REPORT_INDEX = "index.html"
ASSOCIATIONS_CSV = "associations.csv"
CATALOG_DIR = "catalog"
VAC_FITS = "qsocube_vac.fits"
VAC_CSV = "qsocube_vac.csv"
MANIFEST = "MANIFEST.sha256"
STATE_DIR = ".state"
STAGES_FILE = "stages.json"
INPUT_DIR = "input"

SURVEY_SPECTRA_DIR = "spectra"
SURVEY_CATALOG = "DR16Q_v4.fits"
SURVEY_TRUTH = "truth.fits"
SURVEY_RECORD = "SURVEY.json"


def model_stem(latent_size: int) -> str:
    """The common stem of a model's two ONNX files, ``infovae_latentNN``."""
    return f"infovae_latent{latent_size:02d}"


def onnx_names(latent_size: int) -> tuple[str, str]:
    """(encoder, decoder) file names of the model with ``latent_size`` dimensions."""
    stem = model_stem(latent_size)
    return f"{stem}_encoder.onnx", f"{stem}_decoder.onnx"


def anomaly_name(latent_size: int) -> str:
    """File name of the anomaly model (JSON) beside the ONNX pair of ``latent_size``."""
    return f"{model_stem(latent_size)}_anomaly.json"


def model_group_name(latent_size: int) -> str:
    """The cube group of one model: ``/models/latent_NN``."""
    return f"/models/latent_{latent_size:02d}"


@dataclass(frozen=True)
class Release:
    """The paths of one release folder (nothing is created or checked here)."""

    folder: Path

    @property
    def cube(self) -> Path:
        return self.folder / CUBE_NAME

    @property
    def models(self) -> Path:
        return self.folder / MODELS_DIR

    @property
    def report(self) -> Path:
        return self.folder / REPORT_DIR

    @property
    def report_index(self) -> Path:
        return self.report / REPORT_INDEX

    @property
    def catalog(self) -> Path:
        return self.folder / CATALOG_DIR

    @property
    def vac_fits(self) -> Path:
        return self.catalog / VAC_FITS

    @property
    def vac_csv(self) -> Path:
        return self.catalog / VAC_CSV

    @property
    def manifest(self) -> Path:
        return self.folder / MANIFEST

    @property
    def state(self) -> Path:
        return self.folder / STATE_DIR

    @property
    def input(self) -> Path:
        return self.folder / INPUT_DIR


@dataclass(frozen=True)
class Survey:
    """The paths of one simulated survey folder."""

    folder: Path

    @property
    def spectra(self) -> Path:
        return self.folder / SURVEY_SPECTRA_DIR

    @property
    def catalog(self) -> Path:
        return self.folder / SURVEY_CATALOG

    @property
    def truth(self) -> Path:
        return self.folder / SURVEY_TRUTH

    @property
    def record(self) -> Path:
        return self.folder / SURVEY_RECORD
