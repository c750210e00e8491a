#!/usr/bin/env python3
"""Generate a synthetic compiled-package tree for scripts/bench/layers.sh (about 1 GiB by default).

The tree looks like what a BOSH package compiles into (deterministic for a given --seed):

  src/<component>/<dir>/*.{c,h,go,rb,py,...}, share/doc/*.md   ~30% of bytes: many small text
      files (0.5-64 KiB) of code-like lines: compressible (gzip -6 about 3-4x)
  lib/*.so.N, lib/*.a, obj/<component>/*.o                      ~40%: object-file-like binaries
      (16 KiB-2 MiB) built from low-entropy "code" bytes, repeated table records, symbol string
      tables, zero padding and some random data: semi-compressible (about 2x)
  bin/<name>, share/<name>.pak                                   ~30%: a few large binaries
      (tens of MB), mostly random bytes: incompressible
  plus a few symlinks (lib/libX.so -> libX.so.1).

The tree is written to OUT.partial and renamed to OUT when complete, so an interrupted run is
never mistaken for a finished tree. Only the Python 3 standard library is used.
"""

import argparse
import math
import os
import random
import shutil
import struct
import sys

GiB = 1 << 30

KEYWORDS = (
    "if else for while return func def end struct const static int char void uint64_t err nil "
    "true false self import from package include define class module require let var match case "
    "break continue unsigned size_t bool string error public private fn impl pub use"
).split()
PUNCT = ["(", ")", "{", "}", ";", ",", " = ", " == ", " != ", " + ", " - ", "->", ".", "::", " && ", "[", "]"]
COMMON_LINES = ["\n", "}\n", "\treturn err\n", "end\n", "\t}\n", "\t\t}\n", "#include <stdio.h>\n",
                "    return nil\n", "\tif err != nil {\n", "  end\n", "/*\n", " */\n"]
TEXT_EXTS = ["c", "h", "go", "rb", "py", "js", "txt", "cc", "hpp", "yml", "erb", "sh"]


def log_uniform(rng, lo, hi):
    return int(math.exp(rng.uniform(math.log(lo), math.log(hi))))


WORDS = (
    "buf len size count index node list map key value name path file dir read write open close "
    "get set new init free alloc parse format config state data ctx conn req resp header body "
    "error status result item next prev head tail start stop run load store lock unlock flag mode "
    "type info entry table hash cache queue stream block chunk offset limit max min num id user"
).split()


def ident(rng):
    return "_".join(rng.choice(WORDS) for _ in range(rng.randint(1, 3)))


class Gen:
    def __init__(self, seed):
        self.rng = random.Random(seed)
        rng = self.rng
        self.idents = sorted({ident(rng) for _ in range(3000)})
        # A pool of code-like lines; a file is a random draw of lines, common ones much more often.
        pool = []
        for _ in range(40_000):
            depth = rng.choice((0, 1, 1, 2, 2, 2, 3, 4))
            toks = []
            for _ in range(rng.randint(2, 9)):
                r = rng.random()
                if r < 0.35:
                    toks.append(rng.choice(KEYWORDS))
                elif r < 0.85:
                    toks.append(rng.choice(self.idents))
                else:
                    toks.append(str(rng.randint(0, 4096)))
                toks.append(rng.choice(PUNCT) if rng.random() < 0.5 else " ")
            pool.append("\t" * depth + "".join(toks).rstrip() + "\n")
        self.lines = COMMON_LINES + pool
        weights = [400.0] * len(COMMON_LINES) + [1.0] * len(pool)
        acc, self.cum = 0.0, []
        for w in weights:
            acc += w
            self.cum.append(acc)
        # "Opcode" alphabet for object code: 256 byte values mapped onto ~40 with a skew.
        table = bytearray(256)
        ops = rng.sample(range(256), 40)
        for i in range(256):
            table[i] = ops[min(int(rng.expovariate(0.12)), 39)]
        self.opcode_table = bytes(table)
        self.symbols = ["_ZN%d%s%d%sE" % (len(a), a, len(b), b) for a, b in
                        ((rng.choice(self.idents), rng.choice(self.idents)) for _ in range(20_000))]

    def text(self, size):
        out, n = [], 0
        while n < size:
            chunk = "".join(self.rng.choices(self.lines, cum_weights=self.cum, k=256))
            out.append(chunk)
            n += len(chunk)
        return "".join(out).encode()[:size]

    def object_file(self, size):
        rng = self.rng
        parts, n = [b"\x7fELF\x02\x01\x01" + bytes(9) + rng.randbytes(48)], 64
        records = [rng.randbytes(20) for _ in range(16)]
        while n < size:
            kind = rng.random()
            if kind < 0.40:  # .text: low-entropy instruction-like bytes
                seg = rng.randbytes(log_uniform(rng, 2048, 65536)).translate(self.opcode_table)
            elif kind < 0.60:  # relocation/symbol tables: a few record shapes with a counter
                base = rng.randrange(1 << 24)
                seg = b"".join(records[rng.randrange(16)] + struct.pack("<I", base + 8 * i)
                               for i in range(log_uniform(rng, 64, 2048)))
            elif kind < 0.75:  # string table
                seg = "\0".join(rng.choices(self.symbols, k=log_uniform(rng, 32, 1024))).encode() + b"\0"
            elif kind < 0.85:  # alignment padding
                seg = bytes(rng.randint(16, 4096))
            else:  # .data/.rodata constants: random
                seg = rng.randbytes(log_uniform(rng, 1024, 32768))
            parts.append(seg)
            n += len(seg)
        return b"".join(parts)[:size]

    def large_binary(self, path, size):
        rng = self.rng
        with open(path, "wb") as f:
            n = 0
            while n < size:
                r = rng.random()
                if r < 0.90:
                    seg = rng.randbytes(1 << 20)  # packed/compressed payload
                elif r < 0.95:
                    seg = rng.randbytes(1 << 18).translate(self.opcode_table)
                else:
                    seg = bytes(1 << 16)
                seg = seg[: size - n]
                f.write(seg)
                n += len(seg)


def write(path, data, mode=0o644):
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, mode)


def generate(out, total, seed):
    g = Gen(seed)
    rng = g.rng
    text_budget, obj_budget = int(total * 0.30), int(total * 0.40)
    big_budget = total - text_budget - obj_budget
    counts = {"text": [0, 0], "object": [0, 0], "large": [0, 0], "symlinks": [0, 0]}

    # Small text files under src/<component>/<dir>/ (up to ~120 per dir) and share/doc.
    done, comp, d, in_dir = 0, 0, 0, 0
    cdir = None
    while done < text_budget:
        if cdir is None or in_dir >= rng.randint(30, 120):
            d += 1
            if d % 12 == 0 or comp == 0:
                comp += 1
            cdir = os.path.join(out, "src", "comp%03d" % comp, "dir%04d" % d)
            if rng.random() < 0.05:
                cdir = os.path.join(out, "share", "doc", "comp%03d" % comp)
            os.makedirs(cdir, exist_ok=True)
            in_dir = 0
        size = min(log_uniform(rng, 512, 65536), text_budget - done)
        name = "%s_%d.%s" % (rng.choice(g.idents), in_dir, rng.choice(TEXT_EXTS))
        write(os.path.join(cdir, name), g.text(size))
        done += size
        in_dir += 1
        counts["text"][0] += 1
        counts["text"][1] += size

    # Object-like binaries: shared libraries, static archives, object files.
    done, i = 0, 0
    os.makedirs(os.path.join(out, "lib"), exist_ok=True)
    while done < obj_budget:
        size = min(log_uniform(rng, 16384, 2 << 20), obj_budget - done)
        r = rng.random()
        if r < 0.15:
            stem = "lib%s_%d.so" % (rng.choice(g.idents), i)
            write(os.path.join(out, "lib", stem + ".1"), g.object_file(size), 0o755)
            os.symlink(stem + ".1", os.path.join(out, "lib", stem))
            counts["symlinks"][0] += 1
        elif r < 0.30:
            write(os.path.join(out, "lib", "lib%s_%d.a" % (rng.choice(g.idents), i)), g.object_file(size))
        else:
            odir = os.path.join(out, "obj", "comp%03d" % (i // 60))
            os.makedirs(odir, exist_ok=True)
            write(os.path.join(odir, "%s_%d.o" % (rng.choice(g.idents), i)), g.object_file(size))
        done += size
        i += 1
        counts["object"][0] += 1
        counts["object"][1] += size

    # A few large, mostly incompressible binaries.
    os.makedirs(os.path.join(out, "bin"), exist_ok=True)
    sizes = [0.35, 0.25, 0.2, 0.12, 0.08]
    for k, frac in enumerate(sizes):
        size = int(big_budget * frac) if k < len(sizes) - 1 else big_budget - counts["large"][1]
        path = os.path.join(out, "bin", "server%d" % k) if k < 3 else os.path.join(out, "share", "assets%d.pak" % k)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        g.large_binary(path, size)
        os.chmod(path, 0o755 if k < 3 else 0o644)
        counts["large"][0] += 1
        counts["large"][1] += size
    return counts


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--total-bytes", type=int, default=GiB)
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    out = os.path.abspath(args.out)
    partial = out + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial)
    counts = generate(partial, args.total_bytes, args.seed)
    os.rename(partial, out)
    for kind, (files, size) in counts.items():
        if kind == "symlinks":
            print("%-8s %7d" % (kind, files), file=sys.stderr)
        else:
            print("%-8s %7d files %8.1f MB" % (kind, files, size / 1e6), file=sys.stderr)


if __name__ == "__main__":
    main()
