#!/usr/bin/env python3
"""Generate a synthetic BOSH dev release (and optionally the same release as a final tarball)
for scripts/bench/inspect.sh.

Layout written under OUT (deterministic for a given --seed):

  OUT/release/config/final.yml                          name: bench
  OUT/release/dev_releases/bench/index.yml              builds: {<id>: {version: "1+dev.1"}}
  OUT/release/dev_releases/bench/bench-1+dev.1.yml      the dev release manifest
  OUT/cache/<sha1>                                      package and job archives (bosh cache)
  OUT/release.tgz                                       with --tarball: release.MF, packages/, jobs/
  OUT/sizes.txt                                         "<bytes> <kind> <name>" per archive

Package archives are real tar+gzip files holding a `packaging` script and a few source files of
incompressible (pseudo-random) bytes, so gzip cannot shrink them away. Sizes are skewed like a
real release: mostly small, some a few MB, a handful of 20-40 MB. Each package depends on 0-3
earlier ones (a random DAG). Job archives hold `job.MF` (name, packages) and `monit`.

Only the Python 3 standard library is used.
"""

import argparse
import gzip
import hashlib
import io
import os
import random
import shutil
import sys
import tarfile

RELEASE = "bench"
VERSION = "1+dev.1"
MB = 1_000_000


def plan_sizes(rng: random.Random, n: int, total: int) -> list:
    """Payload bytes per package: a handful large, some medium, the rest small; the medium
    bucket absorbs whatever is left so the total lands near `total`."""
    n_large = max(1, min(6, n // 150))
    n_medium = max(1, min(n - n_large, n // 16))
    n_small = n - n_large - n_medium
    large = [rng.randint(20 * MB, 40 * MB) for _ in range(n_large)]
    # Small: log-uniform between 1 KB and 300 KB (median ~17 KB).
    small = [int(10 ** rng.uniform(3, 5.5)) for _ in range(n_small)]
    budget = total - sum(large) - sum(small)
    raw = [rng.uniform(1.0, 8.0) for _ in range(n_medium)]
    scale = max(budget, n_medium * 512 * 1024) / sum(raw)
    medium = [max(512 * 1024, int(r * scale)) for r in raw]
    sizes = large + medium + small
    rng.shuffle(sizes)
    return sizes


def fingerprint(seed: int, kind: str, name: str) -> str:
    return hashlib.sha1(f"bench:{seed}:{kind}:{name}".encode()).hexdigest()


class Member:
    def __init__(self, path: str, data: bytes, mode: int = 0o644):
        self.path, self.data, self.mode = path, data, mode


def write_tgz(dest: str, members: list) -> str:
    """Writes a gzip'd tar like `tar czf` and returns its sha1 (hex)."""
    h = hashlib.sha1()

    class Hashing(io.RawIOBase):
        def __init__(self, f):
            self.f = f

        def writable(self):
            return True

        def write(self, b):
            h.update(b)
            return self.f.write(b)

    with open(dest, "wb") as raw:
        sink = io.BufferedWriter(Hashing(raw), 1 << 20)
        with gzip.GzipFile(fileobj=sink, mode="wb", compresslevel=6, mtime=0) as gz:
            with tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar:
                dirs = set()
                for m in members:
                    parts = m.path.split("/")[:-1]
                    for i in range(1, len(parts) + 1):
                        d = "/".join(parts[:i])
                        if d not in dirs:
                            dirs.add(d)
                            ti = tarfile.TarInfo(d)
                            ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, 0
                            tar.addfile(ti)
                    ti = tarfile.TarInfo(m.path)
                    ti.size, ti.mode, ti.mtime = len(m.data), m.mode, 0
                    tar.addfile(ti, io.BytesIO(m.data))
        sink.flush()
    return h.hexdigest()


def package_members(rng: random.Random, name: str, payload: int) -> list:
    packaging = (
        "# abort script on any command that exits with a non zero value\n"
        "set -e -x\n"
        f"tar xzf {name}/{name}-1.0.tar.gz\n"
        f"cp -a {name}/* ${{BOSH_INSTALL_TARGET}}/\n"
    ).encode()
    n_files = 1 if payload < 8192 else rng.randint(1, 4)
    cuts = sorted(rng.randint(0, payload) for _ in range(n_files - 1))
    bounds = [0] + cuts + [payload]
    members = [Member("packaging", packaging, 0o755)]
    for i in range(n_files):
        size = bounds[i + 1] - bounds[i]
        fname = f"{name}-1.0.tar.gz" if i == 0 else f"part-{i}.bin"
        members.append(Member(f"{name}/{fname}", rng.randbytes(size)))
    return members


def job_members(rng: random.Random, name: str, packages: list) -> list:
    mf = f"---\nname: {name}\ntemplates:\n  ctl.erb: bin/ctl\npackages:\n"
    mf += "".join(f"- {p}\n" for p in packages)
    mf += "properties:\n  bench.port:\n    default: 8080\n"
    monit = (
        f'check process {name}\n  with pidfile /var/vcap/sys/run/{name}/{name}.pid\n'
        f'  start program "/var/vcap/jobs/{name}/bin/ctl start"\n'
        f'  stop program "/var/vcap/jobs/{name}/bin/ctl stop"\n  group vcap\n'
    )
    ctl = "#!/bin/bash\n# " + rng.randbytes(2048).hex() + "\n"
    return [
        Member("job.MF", mf.encode()),
        Member("monit", monit.encode()),
        Member("templates/ctl.erb", ctl.encode()),
    ]


def manifest_yaml(packages: list, jobs: list) -> str:
    out = [
        f"name: {RELEASE}",
        f'version: "{VERSION}"',
        "commit_hash: 0abc1234",
        "uncommitted_changes: false",
        "packages:",
    ]
    for p in packages:
        out += [
            f"- name: {p['name']}",
            f"  version: {p['fp']}",
            f"  fingerprint: {p['fp']}",
            f"  sha1: {p['sha1']}",
        ]
        if p["deps"]:
            out.append("  dependencies:")
            out += [f"  - {d}" for d in p["deps"]]
        else:
            out.append("  dependencies: []")
    out.append("jobs:")
    for j in jobs:
        out += [
            f"- name: {j['name']}",
            f"  version: {j['fp']}",
            f"  fingerprint: {j['fp']}",
            f"  sha1: {j['sha1']}",
        ]
    out.append("license: ~")
    return "\n".join(out) + "\n"


def write_text(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def generate_dev(out: str, n: int, total: int, n_jobs: int, seed: int) -> None:
    rng = random.Random(seed)
    release = os.path.join(out, "release")
    cache = os.path.join(out, "cache")
    for d in (release, cache):
        shutil.rmtree(d, ignore_errors=True)
    os.makedirs(cache)
    write_text(os.path.join(release, "config", "final.yml"), f"---\nname: {RELEASE}\n")
    rel_dir = os.path.join(release, "dev_releases", RELEASE)
    build_id = hashlib.sha1(f"build:{seed}".encode()).hexdigest()[:32]
    write_text(
        os.path.join(rel_dir, "index.yml"),
        f'---\nbuilds:\n  {build_id}:\n    version: "{VERSION}"\nformat-version: "2"\n',
    )

    sizes = plan_sizes(rng, n, total)
    names = [f"pkg-{i:04d}" for i in range(n)]
    packages, lines = [], []
    tmp = os.path.join(cache, ".tmp")
    written = 0
    for i, (name, payload) in enumerate(zip(names, sizes)):
        k = min(i, rng.randint(0, 3))
        deps = sorted(rng.sample(names[:i], k))
        sha1 = write_tgz(tmp, package_members(rng, name, payload))
        os.replace(tmp, os.path.join(cache, sha1))
        size = os.path.getsize(os.path.join(cache, sha1))
        written += size
        lines.append(f"{size} package {name}")
        packages.append({"name": name, "fp": fingerprint(seed, "package", name), "sha1": sha1, "deps": deps})
        if (i + 1) % 100 == 0 or i + 1 == n:
            print(f"  packages: {i + 1}/{n}, {written / MB:.0f} MB", file=sys.stderr, flush=True)
    jobs = []
    for j in range(n_jobs):
        name = f"job-{j}"
        needs = sorted(rng.sample(names, min(n, rng.randint(3, 10))))
        sha1 = write_tgz(tmp, job_members(rng, name, needs))
        os.replace(tmp, os.path.join(cache, sha1))
        lines.append(f"{os.path.getsize(os.path.join(cache, sha1))} job {name}")
        jobs.append({"name": name, "fp": fingerprint(seed, "job", name), "sha1": sha1})
    write_text(os.path.join(rel_dir, f"{RELEASE}-{VERSION}.yml"), manifest_yaml(packages, jobs))
    write_text(os.path.join(out, "sizes.txt"), "\n".join(lines) + "\n")


def generate_tarball(out: str) -> None:
    """Packs the generated dev release as a final release tarball: release.MF first (as bosh
    writes it), then packages/<n>.tgz and jobs/<n>.tgz, all in one gzip stream."""
    import re

    manifest_path = os.path.join(out, "release", "dev_releases", RELEASE, f"{RELEASE}-{VERSION}.yml")
    text = open(manifest_path).read()
    entries = []  # (kind, name, sha1) in manifest order
    section = None
    name = None
    for line in text.splitlines():
        if line in ("packages:", "jobs:"):
            section = line[:-1]
        elif m := re.match(r"^- name: (\S+)$", line):
            name = m.group(1)
        elif (m := re.match(r"^  sha1: (\S+)$", line)) and section:
            entries.append((section, name, m.group(1)))
    cache = os.path.join(out, "cache")
    tmp = os.path.join(out, "release.tgz.tmp")
    with open(tmp, "wb") as raw:
        with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as gz:
            with tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar:
                data = text.encode()
                ti = tarfile.TarInfo("./release.MF")
                ti.size, ti.mode, ti.mtime = len(data), 0o644, 0
                tar.addfile(ti, io.BytesIO(data))
                for kind in ("packages", "jobs"):
                    ti = tarfile.TarInfo(f"./{kind}")
                    ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, 0
                    tar.addfile(ti)
                    for k, n, sha1 in entries:
                        if k != kind:
                            continue
                        src = os.path.join(cache, sha1)
                        ti = tarfile.TarInfo(f"./{kind}/{n}.tgz")
                        ti.size, ti.mode, ti.mtime = os.path.getsize(src), 0o644, 0
                        with open(src, "rb") as f:
                            tar.addfile(ti, f)
    os.replace(tmp, os.path.join(out, "release.tgz"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--packages", type=int, default=1000)
    ap.add_argument("--total-mb", type=int, default=500, help="package archive bytes in total, in MB (10^6)")
    ap.add_argument("--jobs", type=int, default=5)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--dev", action="store_true", help="generate the dev release and its cache")
    ap.add_argument("--tarball", action="store_true", help="pack OUT/release.tgz from the dev release")
    a = ap.parse_args()
    if a.packages < 1 or a.total_mb < 1:
        ap.error("--packages and --total-mb must be positive")
    if a.dev:
        generate_dev(a.out, a.packages, a.total_mb * MB, a.jobs, a.seed)
    if a.tarball:
        generate_tarball(a.out)


if __name__ == "__main__":
    main()
