"""Build throughput, peak memory and disk use against survey size, on the Dask path.

One survey of the largest size is simulated once; the build then reads the first n
files of it for each size, in a fresh process, with a local Dask cluster of two
workers. A straight line through (n, seconds) extrapolates to DR16Q's 750,414 quasars.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SIZES = {"small": (1000, 2000, 4000), "full": (25_000, 50_000, 100_000)}
DR16Q_QUASARS = 750_414
WORKERS = 2

BUILD_SCRIPT = """
import json, resource, sys, time
from pathlib import Path
from builder.build import BuildConfig, build_cube
from builder.inputs import find_spectra
if __name__ == "__main__":  # the Dask workers are spawned processes that re-import this
    survey, out = Path(sys.argv[1]), Path(sys.argv[3])
    n, workers = int(sys.argv[2]), int(sys.argv[4])
    paths = find_spectra([survey / "spectra"])[:n]
    start = time.perf_counter()
    summary = build_cube(paths, out, catalog_path=survey / "DR16Q_v4.fits", workers=workers,
                         config=BuildConfig(batch_size=512), report=lambda _: None)
    seconds = time.perf_counter() - start
    # RUSAGE_CHILDREN is not reported: a child forked from this process inherits its
    # resident pages in ru_maxrss, so it would only repeat the writer's figure
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": seconds, "accepted": summary["accepted"],
                      "writer_peak_rss_mb": own / 1024}))
"""

def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def run(size: str = "small", work: Path | None = None) -> dict:
    from builder.simulate import simulate_survey

    sizes = SIZES[size]
    scratch = Path(work or tempfile.mkdtemp(prefix="qsocube-scaling-"))
    survey = scratch / "survey"
    try:
        start = time.perf_counter()
        if not (survey / "DR16Q_v4.fits").exists():
            simulate_survey(int(max(sizes) * 1.02), 7, survey, overwrite=True,
                            progress=lambda _: None)
        simulate_seconds = time.perf_counter() - start
        rows = []
        files = sorted((survey / "spectra").glob("spec-*.fits"))
        for n in sizes:
            out = scratch / f"cube-{n}.h5"
            script = scratch / "build_subset.py"
            script.write_text(BUILD_SCRIPT)
            result = subprocess.run([sys.executable, str(script), str(survey), str(n),
                                     str(out), str(WORKERS)], capture_output=True, text=True,
                                    check=True, cwd=Path(__file__).resolve().parents[1])
            measured = json.loads(result.stdout.strip().splitlines()[-1])
            input_bytes = sum(p.stat().st_size for p in files[:n])
            rows.append({"spectra_files": n, **{k: round(v, 1) for k, v in measured.items()},
                         "files_per_s": round(n / measured["seconds"]),
                         "input_MB": round(input_bytes / 1e6), "cube_MB": round(
                             out.stat().st_size / 1e6, 1)})
            out.unlink()
        n_files = np.array([r["spectra_files"] for r in rows], float)
        seconds = np.array([r["seconds"] for r in rows])
        slope, intercept = np.polyfit(n_files, seconds, 1)
        cube_per_spectrum = rows[-1]["cube_MB"] / rows[-1]["accepted"]
        input_per_file = rows[-1]["input_MB"] / rows[-1]["spectra_files"]
        return {
            "stage": "scaling", "workers": WORKERS, "simulate_seconds": round(simulate_seconds),
            "rows": rows,
            "seconds_per_1000_files": round(1000 * slope, 2),
            "extrapolated_DR16Q_build_hours": round((intercept + slope * DR16Q_QUASARS) / 3600,
                                                    2),
            "extrapolated_DR16Q_build_hours_per_worker": round(
                WORKERS * (intercept + slope * DR16Q_QUASARS) / 3600, 2),
            "extrapolated_DR16Q_cube_GB": round(cube_per_spectrum * DR16Q_QUASARS / 1e3, 1),
            "extrapolated_DR16Q_input_GB": round(input_per_file * DR16Q_QUASARS / 1e3, 1),
            "peak_writer_rss_MB": max(r["writer_peak_rss_mb"] for r in rows),
        }
    finally:
        if work is None:
            shutil.rmtree(scratch, ignore_errors=True)
