"""``make loadtest``: the locust scenario, headless and bounded, against the running ad server.

Writes CSV and HTML results under ``loadtest/results/``. Start a server first (``adplatform serve`` or
``make demo`` in another terminal); the target is ``--host`` (default http://127.0.0.1:8000).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from adplatform.cli.common import script_main

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="http://127.0.0.1:8000")
    parser.add_argument("--run-time", default="30s")
    parser.add_argument("--users", type=int, default=64)
    args = parser.parse_args()
    try:
        with urllib.request.urlopen(f"{args.host}/readyz", timeout=3) as response:
            ready = response.status == 200
    except OSError:
        ready = False
    if not ready:
        print(
            f"no ready ad server at {args.host} (GET /readyz); start one with `adplatform serve`",
            file=sys.stderr,
        )
        return 2
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    cmd = [
        sys.executable, "-m", "locust", "--config", str(HERE / "locust.conf"), "--host", args.host,
        "--run-time", args.run_time, "--users", str(args.users),
        "--csv", str(results / stamp), "--html", str(results / f"{stamp}.html"),
    ]  # fmt: skip
    code = subprocess.call(cmd)
    print(f"results: {results / stamp}_stats.csv, {results / f'{stamp}.html'}")
    return code


if __name__ == "__main__":
    sys.exit(script_main(main))
