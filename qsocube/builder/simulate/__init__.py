"""Simulated DR16Q-like survey: the product's default input.

``simulate_survey(n, seed, out_dir)`` writes SDSS-format spec-lite files, a DR16Q_v4-layout
catalogue, a truth table and SURVEY.json (see :mod:`qsocube.builder.simulate.survey`). Modules:
``lines`` (line list), ``physics`` (pure vectorised physics), ``noise`` (instrument, sky,
S/N), ``population`` (the drawn survey), ``spectra`` (batch rendering), ``catalog``
(catalogue and truth columns), ``fitsout`` (file writers).
"""

from .survey import print_to_stderr, simulate_survey

__all__ = ["print_to_stderr", "simulate_survey"]
