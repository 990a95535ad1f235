"""Rest-frame emission-line list and pseudo-continuum of the simulated quasars.

The lines are those of the SDSS median composite of Vanden Berk et al. (2001, AJ 122, 549;
"VB01"), with VB01 Table 2 as the starting point: centroid as measured in the composite
(blends and blueshifts included, as Table 2 lists them), rest equivalent width and Gaussian
width. The EWs, widths and centroids were then refined by a least-squares fit of this very
model (power law alpha_nu = -0.44 plus these Gaussians) to the composite itself over
1214-5150 A (median residual about 1%), so that a median stack of simulated spectra
reproduces the composite (tests/test_simulate.py checks that). Blends (Lya + N V wings,
C III] + Si III] + Al III, the Fe II shelves) are carried by the sum of components, so a
single component's EW is not always the catalogue EW of that ion. Ha, He I and O VI lie
outside the fitted range and keep Table-2-like values. The numbers are embedded here on
purpose: the simulator must not read files outside the repository at run time.

``baldwin`` is the slope of log EW against log L (Baldwin effect; about -0.2 for C IV, e.g.
Dietrich et al. 2002), applied around the median luminosity of the survey. Broad-line
widths share a per-quasar velocity factor (black-hole mass); narrow lines do not.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Line(NamedTuple):
    name: str  # used in truth-table column names: EW_<name>, FWHM_<name>
    wave: float  # rest-frame centroid, Angstrom (vacuum)
    ew: float  # rest-frame equivalent width against the power law, Angstrom
    sigma_kms: float  # Gaussian sigma, km/s
    baldwin: float  # d log EW / d log L
    broad: bool  # shares the per-quasar broad-line velocity factor


LINES: tuple[Line, ...] = (
    Line("OVI", 1033.8, 11.0, 2600.0, -0.15, True),
    Line("LYA", 1214.0, 12.9, 1236.0, -0.12, True),
    Line("LYA_B", 1219.0, 56.2, 5026.0, -0.12, True),
    Line("NV", 1240.4, 2.9, 1020.0, 0.00, True),
    Line("SIII", 1262.4, 2.1, 1686.0, 0.00, True),
    Line("OI", 1305.4, 1.8, 1365.0, -0.05, True),
    Line("CII", 1337.2, 0.8, 1103.0, -0.05, True),
    Line("SIIV", 1397.7, 8.7, 2597.0, -0.15, True),
    Line("CIV", 1545.6, 15.8, 1819.0, -0.20, True),
    Line("CIV_B", 1546.1, 24.2, 5848.0, -0.20, True),
    Line("HEII", 1635.0, 8.1, 4131.0, -0.20, True),
    Line("OIII1663", 1666.4, 0.6, 979.0, -0.10, True),
    Line("ALIII", 1859.7, 2.7, 1690.0, -0.05, True),
    Line("SIIII", 1896.0, 0.1, 3000.0, -0.05, True),
    Line("CIII", 1905.1, 19.6, 2639.0, -0.15, True),
    Line("CII2326", 2327.0, 10.5, 3750.0, -0.05, True),
    Line("NEIV", 2422.0, 9.2, 3750.0, -0.05, True),
    Line("MGII", 2801.1, 17.7, 1392.0, -0.10, True),
    Line("NEV", 3424.2, 2.6, 900.0, -0.15, False),
    Line("OII", 3729.5, 2.0, 262.0, -0.20, False),
    Line("NEIII", 3870.1, 3.3, 813.0, -0.15, False),
    Line("HDELTA", 4103.2, 4.8, 1345.0, 0.00, True),
    Line("HGAMMA", 4347.3, 20.6, 1837.0, 0.00, True),
    Line("HEII4686", 4683.0, 1.0, 900.0, -0.10, True),
    Line("HBETA", 4866.1, 51.7, 1857.0, 0.00, True),
    Line("OIII4959", 4959.0, 7.5, 379.0, -0.20, False),
    Line("OIII5007", 5007.6, 16.6, 276.0, -0.20, False),
    Line("HEI", 5877.3, 6.5, 2000.0, 0.00, True),
    Line("HALPHA", 6564.6, 140.0, 1700.0, 0.00, True),
    Line("HALPHA_B", 6566.0, 55.0, 4000.0, 0.00, True),
)

# Broad pseudo-continuum features as (centre, sigma, EW) in Angstrom: the UV and optical
# Fe II blends, the 1600-1800 A shelf and the Balmer continuum ("small blue bump"), which
# lift the composite above the power law, plus a wide red term for the host-galaxy light
# that flattens the composite beyond ~4500 A.
BUMPS: tuple[tuple[float, float, float], ...] = (
    (1762.2, 218.2, 67.5),
    (2250.0, 336.0, 78.1),
    (2541.1, 84.0, 48.3),
    (2770.0, 64.4, 53.1),
    (2918.3, 83.7, 52.3),
    (3189.0, 101.3, 47.8),
    (3460.0, 281.1, 155.6),
    (4561.0, 69.8, 24.9),
    (5130.0, 645.3, 400.6),
)

LINE_WAVE = np.array([line.wave for line in LINES])
LINE_EW = np.array([line.ew for line in LINES])
LINE_SIGMA_KMS = np.array([line.sigma_kms for line in LINES])
LINE_BALDWIN = np.array([line.baldwin for line in LINES])
LINE_BROAD = np.array([line.broad for line in LINES])
BUMP_WAVE = np.array([b[0] for b in BUMPS])
BUMP_SIGMA = np.array([b[1] for b in BUMPS])
BUMP_EW = np.array([b[2] for b in BUMPS])

# Atomic data used by the absorbers (vacuum, Angstrom).
LYA = 1215.67
LYB = 1025.72
LYMAN_LIMIT = 911.75
CIV = 1549.06
SIIV = 1396.76
C_KMS = 299792.458
