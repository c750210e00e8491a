#!/usr/bin/env python3
"""Generate a release source dir of N trivial packages for scripts/bench/compile.sh.

  gen_packages.py --out DIR --shape chain|fan --packages N

Layout written (DIR is replaced):

  DIR/config/final.yml          name: bench
  DIR/packages/<p>/spec         name, dependencies, files: []
  DIR/packages/<p>/packaging    echo $BOSH_PACKAGE_NAME > $BOSH_INSTALL_TARGET/out

Shapes:
  chain  p0001 <- p0002 <- ... <- pN: each package depends on the previous one (no parallelism
         possible: N sequential compiles).
  fan    N independent leaves p0001..pN, no dependencies (all compilable at once).

Only the Python 3 standard library is used; the output is deterministic.
"""

import argparse
import os
import shutil

PACKAGING = "set -e\necho $BOSH_PACKAGE_NAME > $BOSH_INSTALL_TARGET/out\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--shape", choices=["chain", "fan"], required=True)
    ap.add_argument("--packages", type=int, default=200)
    args = ap.parse_args()

    out = args.out
    if os.path.exists(out):
        shutil.rmtree(out)
    os.makedirs(os.path.join(out, "config"))
    os.makedirs(os.path.join(out, "src"))
    with open(os.path.join(out, "config", "final.yml"), "w") as f:
        f.write("name: bench\n")
    width = max(4, len(str(args.packages)))
    names = [f"p{i:0{width}d}" for i in range(1, args.packages + 1)]
    for i, name in enumerate(names):
        deps = [names[i - 1]] if args.shape == "chain" and i > 0 else []
        d = os.path.join(out, "packages", name)
        os.makedirs(d)
        with open(os.path.join(d, "spec"), "w") as f:
            f.write(f"---\nname: {name}\n")
            f.write("dependencies: [" + ", ".join(deps) + "]\n")
            f.write("files: []\n")
        with open(os.path.join(d, "packaging"), "w") as f:
            f.write(PACKAGING)
        os.chmod(os.path.join(d, "packaging"), 0o755)


if __name__ == "__main__":
    main()
