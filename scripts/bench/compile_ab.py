#!/usr/bin/env python3
"""A/B of whole `fissile-oci compile` runs between builds or settings, in one time window.

Each variant is a binary plus environment variables and extra compile arguments. Every round
compiles RELEASE once per variant (the order reversed every other round, so that the drift of
this shared machine falls on all of them alike), each time as a first compile: the work dir
keeps its compilation base unpacked, and what the previous run compiled (package refs, their
blobs, WORK/{packages,runs,logs}) is moved into a trash dir first (`peers.py reset-work`), as
scripts/bench/peers.sh does. Nothing is deleted until the very end: on journal-less ext4 the
files made within a minute of a mass deletion are slower, which would penalise whichever
variant runs next. `sync` before every timed run.

Reported per variant: the median wall time of the process (until it exits: layer commits and
the run's own clean-up included), the median of the summed package times (`--summary`), the
median CPU seconds of the compile's whole process tree (user + system of the compile, its
zygote or helpers and every process in its sandboxes, all reaped in turn: `wait4`), the ratio
of each to the first variant, and every run with the 1-min load average at its start and the
CPU seconds all processes on the machine used meanwhile. A run whose machine CPU exceeded 1.25x
its own tree's CPU plus the cheapest such excess of its variant shared the machine with other
work: marked DISTURBED and left out of the wall-time medians (the CPU medians keep every run:
other work inflates them far less).

Usage (as root):
  scripts/bench/compile_ab.py --work WORK --release REL --base REF [--rounds 3] [--jobs 2]
      'LABEL|BINARY|ENV=VALUE ...|EXTRA ARGS ...' ...
WORK must hold REF (and, to leave base preparation out, its compilation base unpacked: compile
something small there once). Copy each binary out of target/ first (cargo build replaces it).
"""

import argparse
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def machine_cpu() -> float:
    """CPU seconds everything on the machine used so far (user, nice, system, irq, softirq,
    steal)."""
    with open("/proc/stat") as f:
        fields = f.readline().split()
    hz = os.sysconf("SC_CLK_TCK")
    return sum(int(fields[i]) for i in (1, 2, 3, 6, 7, 8)) / hz


def load1() -> str:
    with open("/proc/loadavg") as f:
        return f.read().split()[0]


def summed_package_seconds(path: str) -> float:
    import json

    with open(path) as f:
        return sum(p.get("seconds") or 0.0 for p in json.load(f)["packages"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("variants", nargs="+", help="LABEL|BINARY|ENV=VALUE ...|EXTRA ARGS")
    parser.add_argument("--work", required=True)
    parser.add_argument("--release", required=True)
    parser.add_argument("--base", required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--trash", help="default: WORK/../ab-trash")
    args = parser.parse_args()

    variants = []
    for spec in args.variants:
        parts = spec.split("|")
        if len(parts) < 2 or not os.access(parts[1], os.X_OK):
            print(f"bad variant {spec!r}: LABEL|BINARY|ENV...|ARGS", file=sys.stderr)
            return 2
        env = dict(kv.split("=", 1) for kv in shlex.split(parts[2])) if len(parts) > 2 else {}
        extra = shlex.split(parts[3]) if len(parts) > 3 else []
        variants.append((parts[0], parts[1], env, extra))

    work = os.path.abspath(args.work)
    trash = os.path.abspath(args.trash or os.path.join(os.path.dirname(work), "ab-trash"))
    os.makedirs(trash, exist_ok=True)
    results = {label: [] for label, *_ in variants}
    count = 0
    print(f"nproc {os.cpu_count()}, load average at start: {open('/proc/loadavg').read().strip()}")
    for round_ in range(args.rounds):
        order = variants if round_ % 2 == 0 else list(reversed(variants))
        for label, binary, env, extra in order:
            count += 1
            subprocess.run(
                [sys.executable, os.path.join(HERE, "peers.py"), "reset-work", work,
                 "--trash", os.path.join(trash, f"blobs-{count}")],
                check=True, stdout=subprocess.DEVNULL)
            for d in ("packages", "runs", "logs"):
                if os.path.exists(os.path.join(work, d)):
                    os.rename(os.path.join(work, d), os.path.join(trash, f"{d}-{count}"))
            summary = os.path.join(trash, f"summary-{count}.json")
            subprocess.run(["sync"], check=True)
            load, cpu0, t0 = load1(), machine_cpu(), time.monotonic()
            errors = os.path.join(trash, f"stderr-{count}.txt")
            with open(errors, "w") as err:
                proc = subprocess.Popen(
                    [binary, "-q", "-w", work, "compile", args.release, "--base", args.base,
                     "-j", str(args.jobs), "--summary", summary, *extra],
                    env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=err)
                _, status, usage = os.wait4(proc.pid, 0)
            wall, cpu = time.monotonic() - t0, machine_cpu() - cpu0
            tree = usage.ru_utime + usage.ru_stime
            if os.waitstatus_to_exitcode(status) != 0:
                print(f"{label}: exit {os.waitstatus_to_exitcode(status)}:\n"
                      f"{open(errors).read()[-2000:]}", file=sys.stderr)
                return 1
            pkg = summed_package_seconds(summary)
            results[label].append((wall, pkg, load, cpu, tree))
            print(f"  round {round_ + 1} {label}: {wall:.2f} s (packages {pkg:.2f} s, "
                  f"tree CPU {tree:.1f} s, load {load}, machine CPU {cpu:.0f} s)", flush=True)

    def kept(runs):
        # The CPU others used meanwhile: machine CPU beyond the compile's own.
        others = [r[3] - r[4] for r in runs]
        least = min(others)
        return [r for r, o in zip(runs, others) if r[3] <= 1.25 * (r[4] + least)] or runs

    first = variants[0][0]
    medians = {label: (statistics.median(r[0] for r in kept(runs)),
                       statistics.median(r[1] for r in kept(runs)),
                       statistics.median(r[4] for r in runs))
               for label, runs in results.items()}
    print(f"\n{'variant':34} {'wall s':>8} {'/ first':>8} {'pkg sum s':>10} {'/ first':>8}"
          f" {'tree CPU s':>10} {'/ first':>8}  runs")
    for label, *_ in variants:
        wall, pkg, tree = medians[label]
        f_wall, f_pkg, f_tree = medians[first]
        runs = results[label]
        disturbed = len(runs) - len(kept(runs))
        print(f"{label:34} {wall:8.2f} {wall / f_wall:7.3f}x {pkg:10.2f} {pkg / f_pkg:7.3f}x"
              f" {tree:10.2f} {tree / f_tree:7.3f}x  {len(runs)}"
              + (f" ({disturbed} DISTURBED: left out of wall and pkg sum)" if disturbed else ""))
    print(f"load average at end: {open('/proc/loadavg').read().strip()}")
    # Compiled outputs may hold read-only dirs.
    subprocess.run(["chmod", "-R", "u+rwX", trash], check=False)
    shutil.rmtree(trash, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
