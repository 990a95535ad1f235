"""The analysis stage: figures, HTML report and value-added catalogue of a release.

It reads a release only: the cube through :mod:`analysis.io` (xarray, h5netcdf engine) and
the decoders through onnxruntime; it never imports torch. Entry point:
:func:`analysis.cli.analyze_release` (``qsocube analyze RELEASE``).
"""
