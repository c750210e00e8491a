#!/usr/bin/env python3
"""A/B of `fissile-oci run` latency between builds, in one time window.

Runs `BIN run --rootfs R --scratch S -- /bin/true` for each binary in blocks of K back-to-back
runs, alternating the binaries block by block (and reversing their order every other block),
and prints the median and mean wall time of each. This machine's speed drifts by a millisecond
within minutes, so two builds measured one after the other (as hyperfine does with two
commands) can differ by more than the change being measured; interleaved blocks share the
drift. Back-to-back runs inside a block keep what one run leaves to the kernel (the network
namespace teardown, freed blocks) in the measurement, as in a real sequence of runs.

The wall time includes Python's posix_spawn and waitpid, about 0.5-1 ms more than hyperfine's:
compare the builds with each other, not with scripts/bench/sandbox.sh.

Usage (as root; R is the busybox rootfs scripts/bench/sandbox.sh builds):
  scripts/bench/sandbox_ab.py OLD_BINARY NEW_BINARY [...] [--blocks 15] [--runs-per-block 20]
      [--rootfs /var/tmp/fissile-oci-bench/sandbox-rootfs]
Copy each binary out of target/ first (cargo build replaces it in place).
"""

import argparse
import os
import statistics
import sys
import tempfile
import time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("binaries", nargs="+", help="fissile-oci binaries to compare")
    parser.add_argument("--blocks", type=int, default=15)
    parser.add_argument("--runs-per-block", type=int, default=20)
    parser.add_argument("--rootfs", default="/var/tmp/fissile-oci-bench/sandbox-rootfs")
    args = parser.parse_args()

    if not os.path.isdir(args.rootfs):
        print(f"no rootfs at {args.rootfs}: run scripts/bench/sandbox.sh once, or pass --rootfs",
              file=sys.stderr)
        return 2
    binaries = [os.path.abspath(b) for b in args.binaries]
    for binary in binaries:
        if not os.access(binary, os.X_OK):
            print(f"{binary} is not an executable", file=sys.stderr)
            return 2

    walls = {b: [] for b in binaries}
    with tempfile.TemporaryDirectory(prefix="sandbox-ab-", dir="/var/tmp") as tmp:
        scratch = {b: os.path.join(tmp, f"scratch-{i}") for i, b in enumerate(binaries)}
        for block in range(args.blocks):
            order = binaries if block % 2 == 0 else binaries[::-1]
            for binary in order:
                argv = [binary, "run", "--rootfs", args.rootfs, "--scratch", scratch[binary],
                        "--", "/bin/true"]
                for _ in range(args.runs_per_block):
                    start = time.perf_counter()
                    pid = os.posix_spawn(binary, argv, os.environ)
                    _, status = os.waitpid(pid, 0)
                    walls[binary].append((time.perf_counter() - start) * 1000)
                    if os.waitstatus_to_exitcode(status) != 0:
                        print(f"{binary} run failed (status {status}): {' '.join(argv)}",
                              file=sys.stderr)
                        return 1

    base = statistics.median(walls[binaries[0]])
    print(f"{'binary':<60} {'median ms':>9} {'mean ms':>8} {'runs':>5} {'/ first':>8}")
    for binary in binaries:
        median = statistics.median(walls[binary])
        print(f"{binary:<60} {median:9.2f} {statistics.mean(walls[binary]):8.2f} "
              f"{len(walls[binary]):5d} {median / base:7.2f}x")
    load = open("/proc/loadavg").read().split()[:3]
    print(f"load average at the end (1/5/15 min): {' '.join(load)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
