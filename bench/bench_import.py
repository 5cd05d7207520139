"""Time to the first answer of a fresh process: `import jax`, `import jaxmm`, `jaxmm --help`,
`jaxmm --version`, and `import jaxmm; jaxmm.fit` (the first use, which loads JAX and the library).

Each command runs `--repeats` times in a new Python process; the median and range are printed and
written to bench/results/import_times.json.

    PYTHONPATH=. python bench/bench_import.py [--repeats 7]
"""

import argparse
import json
import statistics
import subprocess
import sys
import time

from _common import RESULTS, code_version, load

COMMANDS = {
    "import jax": [sys.executable, "-c", "import jax"],
    "import jaxmm": [sys.executable, "-c", "import jaxmm"],
    "jaxmm --help": [sys.executable, "-m", "jaxmm", "--help"],
    "jaxmm --version": [sys.executable, "-m", "jaxmm", "--version"],
    "import jaxmm; jaxmm.fit": [sys.executable, "-c", "import jaxmm; jaxmm.fit"],
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    out = {"code": code_version(), "load_before": load(), "seconds": {}}
    for name, cmd in COMMANDS.items():
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            times.append(time.perf_counter() - t)
        out["seconds"][name] = {"median": statistics.median(times), "min": min(times), "max": max(times)}
        print(f"{name:28s} median {statistics.median(times):.3f} s  (range {min(times):.3f}-{max(times):.3f})")
    out["load_after"] = load()
    (RESULTS / "import_times.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
