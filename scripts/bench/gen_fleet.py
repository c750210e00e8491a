#!/usr/bin/env python3
"""Generate the release of scripts/bench/fleet.sh: N packages whose packaging scripts sleep.

  gen_fleet.py --out DIR [--packages 200] [--sleep 0.2] [--layers 8] [--seed 18]

Layout written (DIR is replaced):

  DIR/config/final.yml          name: fleet
  DIR/packages/<p>/spec         name, dependencies, files: [<p>/*]
  DIR/packages/<p>/packaging    sleep SECONDS, then copies its one source file
  DIR/src/<p>/input.txt         one line naming the package

Shape: the packages are spread over LAYERS layers (as a release's packages are: a few runtimes
and libraries at the bottom, many things on top); each package of a layer above the first
depends on one to three packages of the layers below, most often the one just below, so the
longest chain is LAYERS packages long and the graph is wide. The sleep stands in for the CPU of
another machine: four runners can be simulated on two cores.

Only the Python 3 standard library is used; the same arguments give the same release.
"""

import argparse
import os
import random
import shutil


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--packages", type=int, default=200)
    ap.add_argument("--sleep", default="0.2")
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--seed", type=int, default=18)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    out = args.out
    if os.path.exists(out):
        shutil.rmtree(out)
    os.makedirs(os.path.join(out, "config"))
    with open(os.path.join(out, "config/final.yml"), "w") as f:
        f.write("name: fleet\n")
    names = [f"p{i:03d}" for i in range(args.packages)]
    per_layer = max(1, args.packages // args.layers)
    layer_of = {n: min(i // per_layer, args.layers - 1) for i, n in enumerate(names)}
    by_layer = {}
    for n in names:
        by_layer.setdefault(layer_of[n], []).append(n)
    for n in names:
        layer = layer_of[n]
        deps = set()
        if layer > 0:
            for _ in range(rng.randint(1, 3)):
                below = layer - 1 if rng.random() < 0.7 else rng.randrange(layer)
                deps.add(rng.choice(by_layer[below]))
        pkg = os.path.join(out, "packages", n)
        os.makedirs(pkg)
        deps_yaml = "".join(f"- {d}\n" for d in sorted(deps))
        with open(os.path.join(pkg, "spec"), "w") as f:
            f.write(f"name: {n}\ndependencies:\n{deps_yaml}files:\n- {n}/*\n")
        with open(os.path.join(pkg, "packaging"), "w") as f:
            f.write(f"set -e\nsleep {args.sleep}\ncp {n}/input.txt \"$BOSH_INSTALL_TARGET/\"\n")
        src = os.path.join(out, "src", n)
        os.makedirs(src)
        with open(os.path.join(src, "input.txt"), "w") as f:
            f.write(f"source of {n}\n")


if __name__ == "__main__":
    main()
