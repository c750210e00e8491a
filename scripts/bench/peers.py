#!/usr/bin/env python3
"""Helpers of scripts/bench/peers.sh (standard library only).

  peers.py stage --release REL --inspect INSPECT.json --out DIR --plan PLAN.json
      Puts each package's sources where a compile sees them (its files at their relative paths,
      plus `packaging`), as fissile-oci stages them, into DIR/<pkg>/; writes PLAN.json
      {"release", "order": [...], "packages": {name: {"fingerprint", "dependencies"}}}. For a
      release source dir the spec `files` globs are resolved as bosh does (src/ then blobs/, src
      wins, minus `excluded_files`) and every package's v2 fingerprint is recomputed from the
      staged files and checked against `fissile-oci inspect --json`, so the peers are known to
      compile exactly the files fissile-oci compiles. Release tarballs (file or extracted dir
      with release.MF): each packages/<name>.tgz is extracted.
  peers.py makefile --plan PLAN.json --runner CMD --stamps DIR --out FILE
      A Makefile over the package DAG: one target per package, whose recipe is
      `CMD <pkg> <fingerprint> <dep,dep|->`; `all` lists the packages in compile order.
  peers.py reset-work WORK_DIR --trash DIR
      Drops the compiled packages' refs (index entries with a bosh package name annotation) from
      WORK_DIR/oci/index.json, atomically, and moves the blobs no image references any more into
      DIR: `fissile-oci cache gc` without deleting anything (see cmd_reset_work).
  peers.py rss PID BIN OUT.json
      Polls /proc/PID/status VmHWM (and VmRSS) every 50 ms until PID is gone; also the largest
      VmHWM of its direct children (the sandbox helpers). Writes kiB values and its own CPU time.
  peers.py outputs-fissile --summary S.json --work WORK_DIR --out MAP.json
  peers.py outputs-dir --plan PLAN.json --dir DIR --out MAP.json
      A map {package: output dir} for `verify`.
  peers.py verify --plan PLAN.json --map MAP.json --listing OUT.json [--reference REF.json]
                  [--trivial]
      Every package's output dir exists and is non-empty (and, --trivial, its `out` file holds
      the package name); writes the listing (relative path + type of every entry per package)
      and, with --reference, fails when a package's listing differs from the reference one.
  peers.py record --out F.json --tool T --wall S [--times DIR] [--summary S.json] [--rss R.json]
                  [--error MSG] [--smoke MSG]
      One measurement's result file.
  peers.py crosscheck --results DIR
      Each measurement's output listing against the first verified bare-metal one of the same
      release (else fissile-oci's): a peer whose outputs differ is marked failed.
  peers.py report --results DIR --plan PLAN.json [--trivial-plan SHAPE=PLAN ...] ...
      The tables, targets and notes.
"""

import argparse
import hashlib
import json
import os
import re
import shutil
import statistics
import sys
import tarfile
import time

PACKAGE_NAME_ANNOTATION = "org.cloudfoundry.bosh.package.name"


# --- staging -----------------------------------------------------------------------------------

def glob_regex(pattern):
    """A bosh `files` glob (doublestar, after filepath.Join cleaned it) as a regex over
    slash-separated relative paths: `*` stays within a component but matches dotfiles, `**` as a
    whole component spans directories, `{a,b}` alternates, `[...]` classes, `\\` escapes."""
    parts = []
    for comp in pattern.split("/"):
        if comp in ("", "."):
            continue
        if comp == "..":
            if not parts:
                raise ValueError(f"files pattern {pattern!r} points outside src/ and blobs/")
            parts.pop()
            continue
        parts.append(comp)
    if not parts:
        raise ValueError(f"files pattern {pattern!r} is empty")

    def component(s):
        out, i = [], 0
        while i < len(s):
            c = s[i]
            if c == "\\" and i + 1 < len(s):
                out.append(re.escape(s[i + 1]))
                i += 2
            elif c == "*":
                while i < len(s) and s[i] == "*":
                    i += 1
                out.append("[^/]*")
            elif c == "?":
                out.append("[^/]")
                i += 1
            elif c == "[":
                j = s.find("]", i + 2)
                if j < 0:
                    out.append(re.escape(c))
                    i += 1
                    continue
                body = s[i + 1:j]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = j + 1
            elif c == "{":
                depth, j, alts, start = 0, i, [], i + 1
                while j < len(s):
                    if s[j] == "{":
                        depth += 1
                    elif s[j] == "}":
                        depth -= 1
                        if depth == 0:
                            break
                    elif s[j] == "," and depth == 1:
                        alts.append(s[start:j])
                        start = j + 1
                    j += 1
                if j >= len(s):
                    out.append(re.escape(c))
                    i += 1
                    continue
                alts.append(s[start:j])
                out.append("(?:" + "|".join(component(a) for a in alts) + ")")
                i = j + 1
            else:
                out.append(re.escape(c))
                i += 1
        return "".join(out)

    rx = ""
    for idx, comp in enumerate(parts):
        last = idx == len(parts) - 1
        if comp == "**":
            rx += ".*" if last else "(?:.*/)?"
        else:
            rx += component(comp) + ("" if last else "/")
    return re.compile("^" + rx + "$", re.S)


def walk_files(root):
    """Relative path -> absolute path of every non-directory entry under root (symlinks not
    followed, so files reached through a symlinked directory are not listed)."""
    out = {}
    if not os.path.isdir(root):
        return out
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            full = os.path.join(dirpath, name)
            out[os.path.relpath(full, root).replace(os.sep, "/")] = full
    return out


def read_yaml_spec(path):
    """The fields of a package spec we need: name, dependencies, files, excluded_files."""
    try:
        import yaml  # python3-yaml, when installed
    except ImportError:
        return read_spec_plain(path)
    doc = yaml.safe_load(open(path, encoding="utf-8")) or {}
    return {"name": doc.get("name"), "dependencies": list(doc.get("dependencies") or []),
            "files": list(doc.get("files") or []), "excluded_files": list(doc.get("excluded_files") or [])}


def read_spec_plain(path):
    """The few fields of a package spec we need, without a YAML library: name, dependencies,
    files, excluded_files (block or flow lists of plain or quoted scalars)."""
    fields = {"name": None, "dependencies": [], "files": [], "excluded_files": []}
    current = None

    def scalar(v):
        v = v.strip()
        if len(v) >= 2 and v[0] == v[-1] and v[0] in "'\"":
            return v[1:-1]
        return v

    for raw in open(path, encoding="utf-8"):
        line = raw.split(" #")[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if not line.strip() or line.strip() == "---":
            continue
        m = re.match(r"^([A-Za-z_]+):\s*(.*)$", line)
        if m:
            key, value = m.group(1), m.group(2).strip()
            current = key if key in fields else None
            if current is None:
                continue
            if key == "name":
                fields["name"] = scalar(value)
            elif value.startswith("["):
                inner = value.strip("[]").strip()
                fields[key] = [scalar(x) for x in inner.split(",") if x.strip()] if inner else []
            elif value in ("", "~", "null"):
                fields[key] = []
            continue
        m = re.match(r"^\s*-\s*(.*)$", line)
        if m and current in ("dependencies", "files", "excluded_files"):
            fields[current].append(scalar(m.group(1)))
    return fields


def file_chunk(rel, path, script, era):
    st = os.lstat(path)
    h = hashlib.sha1() if era == "sha1" else hashlib.sha256()
    if os.path.islink(path):
        h.update(os.fsencode(os.readlink(path)))
        mode = "symlink"
    else:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        mode = "100755" if st.st_mode & 0o111 else "100644"
    digest = h.hexdigest() if era == "sha1" else "sha256:" + h.hexdigest()
    return rel, digest + ("" if script else mode)


def fingerprint(chunks, deps, era):
    text = "v2"
    for rel, rest in sorted(chunks, key=lambda c: c[0].encode()):
        text += rel + rest
    if deps:
        text += ",".join(sorted(deps))
    h = hashlib.sha1() if era == "sha1" else hashlib.sha256()
    h.update(text.encode())
    return h.hexdigest()


def copy_entry(src, dst):
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    if os.path.islink(src):
        os.symlink(os.readlink(src), dst)
    else:
        shutil.copy2(src, dst)


def stage_source_dir(release, pkgs, out):
    src_tree = walk_files(os.path.join(release, "src"))
    blob_tree = walk_files(os.path.join(release, "blobs"))
    problems = []
    for name, info in pkgs.items():
        pdir = os.path.join(release, "packages", name)
        spec = read_yaml_spec(os.path.join(pdir, "spec"))
        selected = {}
        for tree in (blob_tree, src_tree):  # src wins: applied last
            for pattern in spec["files"]:
                rx = glob_regex(pattern)
                for rel, path in tree.items():
                    if rx.match(rel):
                        selected[rel] = path
        for pattern in spec["excluded_files"]:
            rx = glob_regex(pattern)
            for rel in [r for r in selected if rx.match(r)]:
                del selected[rel]
        dest = os.path.join(out, name)
        os.makedirs(dest)
        for rel, path in selected.items():
            copy_entry(path, os.path.join(dest, rel))
        scripts = [s for s in ("packaging", "pre_packaging") if os.path.exists(os.path.join(pdir, s))]
        for s in scripts:
            copy_entry(os.path.join(pdir, s), os.path.join(dest, s))
        want = info["fingerprint"]
        era = "sha1" if len(want) == 40 else "sha256"
        chunks = [file_chunk(rel, path, False, era) for rel, path in selected.items()]
        chunks += [file_chunk(s, os.path.join(pdir, s), True, era) for s in scripts]
        got = fingerprint(chunks, info["dependencies"], era)
        if got != want:
            problems.append(f"{name}: staged files give fingerprint {got}, fissile-oci inspect says {want} "
                            f"({len(selected)} files: {sorted(selected)[:8]}...)")
    if problems:
        sys.exit("staging does not match fissile-oci's view of the release:\n  " + "\n  ".join(problems))


def stage_tarball(release, pkgs, out):
    """A release tarball (file) or an extracted one (dir with release.MF): packages/<n>.tgz."""
    def extract(fileobj, dest):
        with tarfile.open(fileobj=fileobj, mode="r:*") as t:
            t.extractall(dest, filter="tar") if hasattr(tarfile, "data_filter") else t.extractall(dest)

    if os.path.isdir(release):
        for name in pkgs:
            with open(os.path.join(release, "packages", f"{name}.tgz"), "rb") as f:
                extract(f, os.path.join(out, name))
        return
    with tarfile.open(release, mode="r:*") as t:
        for member in t.getmembers():
            m = re.match(r"^(?:\./)?packages/([^/]+)\.tgz$", member.name)
            if m and m.group(1) in pkgs:
                extract(t.extractfile(member), os.path.join(out, m.group(1)))
    missing = [n for n in pkgs if not os.path.isdir(os.path.join(out, n))]
    if missing:
        sys.exit(f"{release}: no packages/<name>.tgz for {missing}")


def cmd_stage(a):
    inspect = json.load(open(a.inspect))
    if len(inspect["releases"]) != 1:
        sys.exit("peers.sh compares one release at a time")
    rel = inspect["releases"][0]
    pkgs = {p["name"]: {"fingerprint": p["fingerprint"], "dependencies": list(p.get("dependencies") or [])}
            for p in rel["packages"]}
    if os.path.exists(a.out):
        shutil.rmtree(a.out)
    os.makedirs(a.out)
    if os.path.isdir(a.release) and os.path.isdir(os.path.join(a.release, "packages")) and \
            not os.path.exists(os.path.join(a.release, "release.MF")):
        stage_source_dir(a.release, pkgs, a.out)
    else:
        stage_tarball(a.release, pkgs, a.out)
    plan = {"release": rel["name"], "order": inspect["compile_order"], "packages": pkgs}
    json.dump(plan, open(a.plan, "w"), indent=1)
    print(f"staged {len(pkgs)} packages of {rel['name']} into {a.out}")


# --- Makefile ----------------------------------------------------------------------------------

def cmd_makefile(a):
    plan = json.load(open(a.plan))
    stamp = lambda n: f"{a.stamps}/{n}.done"
    lines = [".SUFFIXES:", ".DELETE_ON_ERROR:", "", ".PHONY: all",
             "all: " + " ".join(stamp(n) for n in plan["order"]), ""]
    for name in plan["order"]:
        p = plan["packages"][name]
        deps = p["dependencies"]
        lines.append(f"{stamp(name)}: " + " ".join(stamp(d) for d in deps))
        lines.append(f"\t@{a.runner} {name} {p['fingerprint']} {','.join(deps) or '-'}")
        lines.append("\t@touch $@")
        lines.append("")
    os.makedirs(a.stamps, exist_ok=True)
    open(a.out, "w").write("\n".join(lines))


# --- work dir reset ----------------------------------------------------------------------------

def cmd_reset_work(a):
    """Like dropping the refs and running `fissile-oci cache gc`, except that unreferenced blobs
    are moved to the trash dir (same file system) rather than deleted: on journal-less ext4,
    inodes freed in the last 60 s (360 s before writeback) make every file creation slower
    (fs/ext4/ialloc.c recently_deleted()), which would slow down the next timed run."""
    oci = os.path.join(a.work, "oci")
    path = os.path.join(oci, "index.json")
    index = json.load(open(path))
    keep = [m for m in index.get("manifests", [])
            if PACKAGE_NAME_ANNOTATION not in (m.get("annotations") or {})]
    dropped = len(index.get("manifests", [])) - len(keep)
    index["manifests"] = keep
    tmp = path + ".peers-tmp"
    with open(tmp, "w") as f:
        json.dump(index, f)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)

    blobs = os.path.join(oci, "blobs", "sha256")
    referenced = set()

    def walk(desc):
        hexd = desc["digest"].split(":", 1)[1]
        if hexd in referenced:
            return
        referenced.add(hexd)
        media = desc.get("mediaType", "")
        if "manifest" in media or "index" in media:
            doc = json.load(open(os.path.join(blobs, hexd)))
            if "config" in doc:
                walk(doc["config"])
            for d in doc.get("layers", []) + doc.get("manifests", []):
                walk(d)

    for m in keep:
        walk(m)
    moved = 0
    dest = os.path.join(a.trash, "blobs")
    os.makedirs(dest, exist_ok=True)
    for name in os.listdir(blobs):
        if name not in referenced:
            os.rename(os.path.join(blobs, name), os.path.join(dest, f"{name}.{time.time_ns()}"))
            moved += 1
    print(f"dropped {dropped} compiled package refs, moved {moved} unreferenced blobs to {dest}")


# --- peak RSS ----------------------------------------------------------------------------------

def status_kib(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None


def children(pid):
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += f.read().split()
    except OSError:
        pass
    return out


def cmd_rss(a):
    """Cheap on purpose (it runs beside the compile it measures): per 50 ms tick one status read
    of the main process and one of each of its direct children (the sandbox helpers)."""
    pid = int(a.pid)
    hwm = rss = helper = 0
    samples = 0
    while True:
        v = status_kib(pid, "VmHWM")
        if v is None:
            # gone, or a zombie (no Vm* fields): the last reading is the peak
            break
        hwm = max(hwm, v)
        rss = max(rss, status_kib(pid, "VmRSS") or 0)
        samples += 1
        for child in children(pid):
            helper = max(helper, status_kib(child, "VmHWM") or 0)
        time.sleep(0.05)
    t = os.times()
    json.dump({"main_vmhwm_kib": hwm, "main_vmrss_max_kib": rss, "helper_vmhwm_kib": helper,
               "samples": samples, "poller_cpu_s": round(t.user + t.system, 3)}, open(a.out, "w"))


# --- outputs and their checks ------------------------------------------------------------------

def cmd_outputs_fissile(a):
    s = json.load(open(a.summary))
    out = {p["name"]: os.path.join(a.work, "packages", p["cache_key"]) for p in s["packages"]}
    json.dump(out, open(a.out, "w"), indent=1)


def cmd_outputs_dir(a):
    plan = json.load(open(a.plan))
    json.dump({n: os.path.join(a.dir, n) for n in plan["packages"]}, open(a.out, "w"), indent=1)


def listing(root):
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames) + sorted(filenames):
            full = os.path.join(dirpath, name)
            kind = "l" if os.path.islink(full) else "d" if os.path.isdir(full) else "f"
            out.append(f"{os.path.relpath(full, root)} {kind}")
    return sorted(out)


def cmd_verify(a):
    plan = json.load(open(a.plan))
    outs = json.load(open(a.map))
    problems, result = [], {}
    for name in plan["order"]:
        d = outs.get(name)
        if not d or not os.path.isdir(d):
            problems.append(f"{name}: no output dir ({d})")
            continue
        entries = listing(d)
        if not entries:
            problems.append(f"{name}: the output dir {d} is empty")
        if a.trivial:
            try:
                got = open(os.path.join(d, "out")).read().strip()
            except OSError as e:
                got = f"<{e}>"
            if got != name:
                problems.append(f"{name}: out holds {got!r}")
        result[name] = entries
    json.dump(result, open(a.listing, "w"))
    if a.reference and os.path.exists(a.reference) and not problems:
        ref = json.load(open(a.reference))
        for name in plan["order"]:
            if name in ref and ref[name] != result.get(name):
                mine, theirs = set(result.get(name, [])), set(ref[name])
                problems.append(f"{name}: output differs from the reference: only here "
                                f"{sorted(mine - theirs)[:5]}, only in the reference {sorted(theirs - mine)[:5]}")
    if problems:
        print("\n".join(problems[:20]), file=sys.stderr)
        sys.exit(1)
    files = sum(len(v) for v in result.values())
    print(f"{len(result)} packages, {files} entries")


def cmd_record(a):
    r = {"tool": a.tool, "wall": float(a.wall) if a.wall else None, "ok": a.error is None,
         "error": a.error, "smoke": a.smoke, "load": a.load,
         "machine_cpu": float(a.machine_cpu) if a.machine_cpu else None}
    if a.times and os.path.isdir(a.times):
        per = {}
        for f in os.listdir(a.times):
            t0, t1 = open(os.path.join(a.times, f)).read().split()
            per[f] = float(t1) - float(t0)
        r["per_package"] = per
    if a.summary and os.path.exists(a.summary):
        s = json.load(open(a.summary))
        r["per_package"] = {p["name"]: p["seconds"] for p in s["packages"]}
        r["summary_wall"] = s.get("wall_seconds")
        r["statuses"] = sorted({p["status"] for p in s["packages"]})
    if a.rss and os.path.exists(a.rss):
        r["rss"] = json.load(open(a.rss))
    json.dump(r, open(a.out, "w"), indent=1)


def cmd_crosscheck(a):
    """Each measurement's output listing against the first verified bare-metal one of the same
    release (else fissile-oci's): a peer whose outputs differ is marked failed."""
    runs = {}
    for f in sorted(os.listdir(a.results)):
        m = re.match(r"^(.+)-([a-z]+)-(\d+)\.json$", f)
        if m and os.path.exists(os.path.join(a.results, f[:-5] + ".listing.json")):
            runs.setdefault(m.group(1), []).append((m.group(2), int(m.group(3)), f))
    bad = 0
    for kind, items in runs.items():
        ref = None
        for tool in ("bare", "fissile"):
            for t, rep, f in sorted(items, key=lambda x: x[1]):
                r = json.load(open(os.path.join(a.results, f)))
                if t == tool and r["ok"]:
                    ref = (tool, json.load(open(os.path.join(a.results, f[:-5] + ".listing.json"))))
                    break
            if ref:
                break
        if not ref:
            continue
        for t, rep, f in items:
            path = os.path.join(a.results, f)
            r = json.load(open(path))
            if not r["ok"]:
                continue
            mine = json.load(open(path[:-5] + ".listing.json"))
            diffs = [n for n in ref[1] if ref[1][n] != mine.get(n)]
            if diffs:
                n = diffs[0]
                only_mine = sorted(set(mine.get(n, [])) - set(ref[1][n]))[:3]
                only_ref = sorted(set(ref[1][n]) - set(mine.get(n, [])))[:3]
                r["ok"] = False
                r["error"] = (f"outputs differ from {ref[0]}'s in {len(diffs)} package(s), e.g. {n}: "
                              f"only here {only_mine}, only in {ref[0]}'s {only_ref}")
                json.dump(r, open(path, "w"), indent=1)
                print(f"{f}: {r['error']}", file=sys.stderr)
                bad += 1
    print(f"cross-check of output listings: {bad} mismatching measurement(s)")


# --- report ------------------------------------------------------------------------------------

DISTURBED = 1.25


def undisturbed(runs):
    """The runs not visibly disturbed by other work on the machine: the same work by the same tool
    should cost about the same machine CPU, so a run that cost more than DISTURBED x the
    cheapest run of that tool (same release) shared the machine with something else."""
    cpu = [r.get("machine_cpu") for r in runs]
    if not runs or any(c is None for c in cpu) or min(cpu) < 5:
        return runs  # unknown, or too short for /proc/stat's 10 ms ticks to tell
    low = min(cpu)
    return [r for r in runs if r["machine_cpu"] <= low * DISTURBED]


TOOLS = [("fissile", "fissile-oci compile -j {j}"), ("bare", "bare metal (chroot, make -j{j})"),
         ("podman", "podman run --rm (make -j{j})"), ("docker", "docker run --rm (make -j{j})")]


def load_results(d, prefix):
    out = {}
    for f in sorted(os.listdir(d)):
        m = re.match(rf"^{re.escape(prefix)}-([a-z]+)-(\d+)\.json$", f)
        if m:
            out.setdefault(m.group(1), []).append(json.load(open(os.path.join(d, f))))
    return out


def cmd_report(a):
    verdict = lambda ok: "PASS" if ok else "MISS"
    checks = []
    skipped = dict(s.split("=", 1) for s in a.skip) if a.skip else {}
    j = a.jobs

    def median_ok(runs):
        if not runs or not all(r["ok"] for r in runs):
            return None
        return statistics.median(r["wall"] for r in undisturbed(runs))

    if a.plan:
        plan = json.load(open(a.plan))
        res = load_results(a.results, "real")
        n = len(plan["packages"])
        print(f"--- real release {plan['release']!r}: {n} packages, -j {j} ---")
        bare = median_ok(res.get("bare", []))

        def median_run(runs):
            if not runs or not all(r["ok"] for r in runs):
                return None
            ok = sorted(undisturbed(runs), key=lambda r: r["wall"])
            return ok[len(ok) // 2]

        def pkg_sum(run):
            return sum(run["per_package"].values()) if run and run.get("per_package") else None

        bare_sum = pkg_sum(median_run(res.get("bare", [])))
        print(f"{'tool':<32} {'wall s':>8} {'runs':>4} {'/ bare':>7} {'pkg sum s':>10} {'/ bare':>7} {'busy':>5}  verified")
        walls = {}
        run_notes = []
        for key, label in TOOLS:
            runs = res.get(key, [])
            label = label.format(j=j)
            if not runs:
                print(f"{label:<32} {'skipped':>8}       {skipped.get(key, '')}")
                continue
            w = median_ok(runs)
            walls[key] = w
            if w is None:
                err = next(r["error"] for r in runs if not r["ok"])
                print(f"{label:<32} {'FAILED':>8} {len(runs):>4}  {err}")
                continue
            m = median_run(runs)
            ps = pkg_sum(m)
            ratio = f"{w / bare:>6.3f}x" if bare else f"{'n/a':>7}"
            sratio = f"{ps / bare_sum:>6.3f}x" if ps and bare_sum else f"{'n/a':>7}"
            busy = f"{ps / (m['wall'] * j):>5.0%}" if ps else f"{'n/a':>5}"
            calm = undisturbed(runs)
            run_notes.append(f"  {label.split(' (')[0]}: " + ", ".join(
                f"{r['wall']:.1f} s (load {r.get('load') or '?'}"
                + (f", machine CPU {r['machine_cpu']:.0f} s" if r.get("machine_cpu") else "") + ")"
                + ("" if r in calm else " DISTURBED")
                for r in runs))
            smoke = m.get("smoke") or ""
            count = f"{len(calm)}/{len(runs)}" if len(calm) != len(runs) else f"{len(runs)}"
            print(f"{label:<32} {w:>8.2f} {count:>4} {ratio} {ps or 0:>10.2f} {sratio} {busy}  yes; {smoke}")
        print("every run (1-min load average at its start and end; CPU seconds all processes on the machine")
        print(f"used meanwhile: a run that cost more than {DISTURBED}x the cheapest run of the same tool shared")
        print("the machine with other work, is marked DISTURBED and left out of the medians):")
        print("\n".join(run_notes))
        print("wall s: median wall time of the whole run. pkg sum s: the sum of the per-package times below;")
        print(f"it depends less than the wall time on the order in which the {j} workers took the packages, so")
        print("its ratio is closer to the per-package overhead (packages built side by side still slow each")
        print(f"other down). busy: pkg sum / (wall x {j} workers).")
        fis = res.get("fissile", [])
        rss = [r["rss"] for r in fis if r.get("rss")]
        if rss:
            main = max(x["main_vmhwm_kib"] for x in rss)
            helper = max(x["helper_vmhwm_kib"] for x in rss)
            poller = max((x["poller_cpu_s"] for x in rss if "poller_cpu_s" in x), default=None)
            print(f"fissile-oci main process peak RSS (VmHWM): {main / 1024:.1f} MiB ({main * 1024 / 1e6:.1f} MB); "
                  f"largest sandbox helper: {helper / 1024:.1f} MiB (polled every 50 ms"
                  + (f"; the poller used {poller:.1f} CPU s" if poller is not None else "") + ")")
        print()
        if "fissile" in walls and bare and walls["fissile"]:
            r = walls["fissile"] / bare
            checks.append(("real release: fissile-oci <= 1.03x bare metal", r <= 1.03, f"{r:.3f}x"))
        else:
            checks.append(("real release: fissile-oci <= 1.03x bare metal", None, "not measured"))
        if walls.get("fissile") and walls.get("podman"):
            r = walls["fissile"] / walls["podman"]
            checks.append(("real release: fissile-oci faster than podman", r < 1, f"{r:.3f}x podman"))
        else:
            checks.append(("real release: fissile-oci faster than podman", None, "not measured"))
        if rss:
            mb = main * 1024 / 1e6
            checks.append(("fissile-oci peak RSS <= 64 MB", mb <= 64, f"{mb:.1f} MB"))
        else:
            checks.append(("fissile-oci peak RSS <= 64 MB", None, "not measured"))

        # where the time goes, per package (median run of each tool)
        per = {}
        for key, _ in TOOLS:
            runs = [r for r in undisturbed(res.get(key, [])) if r["ok"] and r.get("per_package")]
            if runs:
                runs.sort(key=lambda r: r["wall"])
                per[key] = runs[len(runs) // 2]["per_package"]
        if per:
            cols = [k for k, _ in TOOLS if k in per]
            print("per package seconds (median run of each; fissile-oci: scheduler start -> published, from")
            print("--summary; peers: source copy + container/chroot run, from the make recipe):")
            print(f"{'package':<20}" + "".join(f"{c:>10}" for c in cols) +
                  ("" if "bare" not in per else "".join(f"{c + '-bare':>14}" for c in cols if c != "bare")))
            for name in plan["order"]:
                row = f"{name:<20}" + "".join(f"{per[c].get(name, float('nan')):>10.2f}" for c in cols)
                if "bare" in per:
                    row += "".join(f"{per[c].get(name, float('nan')) - per['bare'].get(name, float('nan')):>+14.2f}"
                                   for c in cols if c != "bare")
                print(row)
            tot = {c: sum(per[c].values()) for c in cols}
            print(f"{'sum':<20}" + "".join(f"{tot[c]:>10.2f}" for c in cols))
            if fis:
                r = sorted([x for x in undisturbed(fis) if x["ok"]], key=lambda x: x["wall"])
                if r:
                    m = r[len(r) // 2]
                    if m.get("summary_wall"):
                        print(f"fissile-oci: process wall {m['wall']:.2f} s, scheduler wall (--summary) "
                              f"{m['summary_wall']:.2f} s: {m['wall'] - m['summary_wall']:.2f} s outside the scheduler "
                              "(start-up, planning, base checks, waiting for the last layer commit)")
            print()

    if a.trivial:
        for spec in a.trivial:
            shape, n = spec.split("=")
            n = int(n)
            sres = load_results(a.results, f"trivial-{shape}")
            print(f"--- trivial release, shape {shape}: {n} packages (`echo $BOSH_PACKAGE_NAME > "
                  f"$BOSH_INSTALL_TARGET/out`), -j {j} ---")
            print(f"{'tool':<36} {'wall s':>9} {'runs':>5} {'ms/pkg':>8} {'/ fissile-oci':>14}")
            ms, rows = {}, []
            for key, label in TOOLS:
                runs = sres.get(key, [])
                label = label.format(j=j)
                if not runs:
                    rows.append((key, f"{label:<36} {'skipped':>9}        {skipped.get(key, '')}"))
                    continue
                w = median_ok(runs)
                if w is None:
                    err = next(r["error"] for r in runs if not r["ok"])
                    rows.append((key, f"{label:<36} {'FAILED':>9} {len(runs):>5}  {err}"))
                    continue
                ms[key] = w / n * 1e3
                calm = len(undisturbed(runs))
                count = f"{calm}/{len(runs)}" if calm != len(runs) else f"{len(runs)}"
                rows.append((key, (label, w, count)))
            for key, row in rows:
                if isinstance(row, str):
                    print(row)
                    continue
                label, w, count = row
                ratio = f"{ms[key] / ms['fissile']:>13.1f}x" if "fissile" in ms else f"{'n/a':>14}"
                print(f"{label:<36} {w:>9.2f} {count:>5} {ms[key]:>8.1f} {ratio}")
            for peer in ("podman", "docker"):
                name = f"trivial {shape}: fissile-oci >= 20x fewer ms/package than {peer}"
                if "fissile" in ms and peer in ms:
                    r = ms[peer] / ms["fissile"]
                    checks.append((name, r >= 20, f"{r:.1f}x ({ms['fissile']:.1f} vs {ms[peer]:.1f} ms)"))
                else:
                    checks.append((name, None, skipped.get(peer, "not measured")))
            print()

    print("--- targets ---")
    for name, ok, detail in checks:
        v = "n/a " if ok is None else verdict(ok)
        print(f"{v}  {name}: {detail}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("stage")
    s.add_argument("--release", required=True)
    s.add_argument("--inspect", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--plan", required=True)
    s = sub.add_parser("makefile")
    s.add_argument("--plan", required=True)
    s.add_argument("--runner", required=True)
    s.add_argument("--stamps", required=True)
    s.add_argument("--out", required=True)
    s = sub.add_parser("reset-work")
    s.add_argument("work")
    s.add_argument("--trash", required=True)
    s = sub.add_parser("rss")
    s.add_argument("pid")
    s.add_argument("bin")
    s.add_argument("out")
    s = sub.add_parser("outputs-fissile")
    s.add_argument("--summary", required=True)
    s.add_argument("--work", required=True)
    s.add_argument("--out", required=True)
    s = sub.add_parser("outputs-dir")
    s.add_argument("--plan", required=True)
    s.add_argument("--dir", required=True)
    s.add_argument("--out", required=True)
    s = sub.add_parser("verify")
    s.add_argument("--plan", required=True)
    s.add_argument("--map", required=True)
    s.add_argument("--listing", required=True)
    s.add_argument("--reference")
    s.add_argument("--trivial", action="store_true")
    s = sub.add_parser("record")
    s.add_argument("--out", required=True)
    s.add_argument("--tool", required=True)
    s.add_argument("--wall")
    s.add_argument("--times")
    s.add_argument("--summary")
    s.add_argument("--rss")
    s.add_argument("--error")
    s.add_argument("--smoke")
    s.add_argument("--load", help="1-min load average at the start and at the end")
    s.add_argument("--machine-cpu", help="CPU seconds all processes used during the run (/proc/stat)")
    s = sub.add_parser("crosscheck")
    s.add_argument("--results", required=True)
    s = sub.add_parser("report")
    s.add_argument("--results", required=True)
    s.add_argument("--plan")
    s.add_argument("--trivial", action="append", help="SHAPE=PACKAGES")
    s.add_argument("--skip", action="append", help="TOOL=REASON")
    s.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args()
    {"stage": cmd_stage, "makefile": cmd_makefile, "reset-work": cmd_reset_work, "rss": cmd_rss,
     "outputs-fissile": cmd_outputs_fissile, "outputs-dir": cmd_outputs_dir, "verify": cmd_verify,
     "record": cmd_record, "crosscheck": cmd_crosscheck, "report": cmd_report}[a.cmd](a)


if __name__ == "__main__":
    main()
