"""`make bench`: every stage's benchmark in one run; a table on stdout, JSON in bench/results/.

Exits 1 if any stated target is missed: speed is asserted here, never in unit tests.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys
import time
from pathlib import Path

STAGES = ("bench.resample", "bench.train", "bench.encode", "bench.analysis", "bench.scaling",
          "bench.fidelity", "bench.anomaly")


def _print(result: dict) -> None:
    print(f"\n== {result.get('stage', '?')}")
    for key, value in result.items():
        if key not in ("stage", "targets"):
            print(f"  {key:<40} {value}")
    for target, met in result.get("targets", {}).items():
        print(f"  target {target:<33} {'met' if met else 'MISSED'}")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--size", default="small", choices=("small", "full"))
    parser.add_argument("--only", nargs="*", help="stage modules to run, e.g. resample train")
    args = parser.parse_args()
    results = []
    for module_name in STAGES:
        short = module_name.split(".")[1]
        if args.only and short not in args.only:
            continue
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        start = time.perf_counter()
        result = module.run(args.size)
        result["bench_seconds"] = round(time.perf_counter() - start, 1)
        results.append(result)
        _print(result)
        if short == "resample":
            reading = module.fits_reading()
            results.append(reading)
            _print(reading)
    out = Path(__file__).resolve().parent / "results" / f"bench-{args.size}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"machine": platform.platform(), "python": sys.version.split()[0],
                               "size": args.size, "results": results}, indent=2))
    print(f"\nwrote {out}")
    missed = [t for r in results for t, met in r.get("targets", {}).items() if not met]
    if missed:
        print(f"targets missed: {'; '.join(missed)}", file=sys.stderr)
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
