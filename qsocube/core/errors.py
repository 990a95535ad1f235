"""Every error qsocube raises on purpose, and the reasons an input can be rejected.

``QsocubeError`` is the one base class: the command line turns any of them into one line
``qsocube CMD: message`` and the exit code of the class (2 unless said otherwise), and
nothing else needs to know argparse or exit codes. The subclasses say which kind of thing
is wrong; decisions are taken on the class or on a ``Rejection`` code, never on the text
of a message.

``Rejection`` is the closed list of reasons why one input spectrum is left out of a cube
(the cube's ``/rejected/reason_code``) or gets no code from ``qsocube encode`` (the output's
``FLAG`` column): one integer code per reason, stored as uint8 with CF ``flag_values`` and
``flag_meanings``. Codes are never renumbered; new reasons take new numbers.
"""

from __future__ import annotations

import enum
from pathlib import Path


class Rejection(enum.IntEnum):
    """Why an input spectrum was rejected (0: it was not). Stored as uint8."""

    ok = 0
    unreadable = 1  # not a readable FITS/HDF5 file (truncated, corrupt, wrong format)
    not_a_regular_file = 2  # a folder, device, FIFO or dangling link given as a spectrum
    missing_data = 3  # an HDU or column is missing, fewer than 2 pixels, no identifiers
    non_finite_values = 4  # NaN or inf in flux (on a pixel with ivar > 0), ivar or loglam
    bad_values = 5  # values that are finite but impossible (negative ivar)
    off_frame = 6  # loglam not increasing or not on the SDSS 1e-4 dex frame
    no_valid_pixels = 7  # every pixel masked (ivar == 0 or a bad-data bit), or none on the grid
    duplicate = 8  # a second file with the same PLATE-MJD-FIBERID
    no_catalog_row = 9  # no row for the spectrum in the given catalogue
    no_snr = 10  # no SN_MEDIAN_ALL to select on
    low_snr = 11  # SN_MEDIAN_ALL below the selection threshold (--min-snr)
    low_coverage = 12  # fewer valid grid pixels than --min-covered-fraction
    partial_coverage = 13  # the study's rule (--coverage full): must span the whole grid
    bad_normalisation = 14  # the median flux over valid pixels is not positive
    unreadable_chunk = 15  # rows of an array or cube input whose chunk cannot be read
    no_spectrum_file = 16  # catalogue rows without a spectrum file (one summary row)

    @classmethod
    def flag_values(cls) -> list[int]:
        return [int(member) for member in cls]

    @classmethod
    def flag_meanings(cls) -> str:
        """CF ``flag_meanings``: the names, blank-separated, in code order."""
        return " ".join(member.name for member in cls)


class QsocubeError(Exception):
    """Base of every error qsocube raises on purpose; the message is one line."""

    exit_code = 2


class UsageError(QsocubeError):
    """The command or call is wrong: a bad option value, a missing or clashing path."""


class MissingInputError(UsageError, FileNotFoundError):
    """An input named on the command line (file, folder or pattern) finds nothing."""


class ClusterError(QsocubeError):
    """Dask is not installed, or its scheduler cannot be reached."""


class InputError(QsocubeError, ValueError):
    """One input file cannot be used; ``reason`` says why as a ``Rejection`` code.

    The message names the file; ``detail`` is the message without it (what ``/rejected``
    stores beside the code).
    """

    def __init__(self, path: str | Path, reason: Rejection, detail: str) -> None:
        self.path, self.reason, self.detail = Path(path), Rejection(reason), detail
        super().__init__(f"{path}: {detail}")


class CatalogError(QsocubeError, ValueError):
    """A catalogue file (DR16Q_v4 layout) cannot be used."""


class CubeError(QsocubeError, ValueError):
    """A cube (or the training state beside it) is unfit for what was asked of it."""


class ModelError(QsocubeError):
    """An ONNX model file that cannot be used: missing, unreadable or not matching."""


class AnalysisError(QsocubeError, ValueError):
    """A release that cannot be analysed (exit code 1, as before)."""

    exit_code = 1


class ReleaseError(QsocubeError):
    """A release that could not be completed or failed its own validation."""
