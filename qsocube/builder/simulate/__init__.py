"""Simulated DR16Q-like survey: the product's default input.

``simulate_survey(n, seed, out_dir)`` writes SDSS-format spec-lite files, a DR16Q_v4-layout
catalogue, a truth table and SURVEY.json (see :mod:`qsocube.builder.simulate.survey`). Modules:
``templates`` (the package data: eigenspectra of real quasars, star and galaxy templates,
and the held-out rule for real spectra), ``quasars`` (quasar continua and lines from those
eigenspectra, with host light), ``physics`` (Lyman-alpha forest, DLAs, Lyman limit, BAL
troughs, reddening), ``instrument`` (BOSS-like noise, masks and flux calibration from
``data/instrument.h5``), ``contaminants`` (stars, galaxies and artefacts), ``population``
(the drawn survey), ``spectra`` (batch rendering), ``catalog`` (catalogue and truth
columns), ``fitsout`` (file writers).
"""

from .survey import print_to_stderr, simulate_survey

__all__ = ["print_to_stderr", "simulate_survey"]
