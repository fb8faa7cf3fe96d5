"""``python -m port inspect FILE [--json]``: what a prototxt, caffemodel or .h5 holds.

One line per layer: name, type, bottoms -> tops, blob shapes, parameter count and bytes;
for a Deconvolution with weights, whether they are the bilinear upsampling kernel FCN's
``surgery.interp`` fills (via ``port.ops.is_bilinear`` where torch is available).
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import numpy as np

from . import is_hdf5, load_caffemodel, load_net
from .errors import CaffeFormatError
from .net import NetDef

_TEXT_PROBE = 4096  # bytes looked at to tell a prototxt from a binary caffemodel


def looks_like_text(path: str) -> bool:
    """Whether the file starts as UTF-8 text without control bytes (a prototxt)."""
    with open(path, "rb") as fh:
        head = fh.read(_TEXT_PROBE)
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:  # a probe may cut a multi-byte character at its end
        if e.start < len(head) - 3:
            return False
        text = head[:e.start].decode("utf-8")
    return all(c.isprintable() or c in "\t\n\r" for c in text)


def load_any(path: str) -> tuple[str, NetDef]:
    """(format name, net) of a prototxt, binary caffemodel or HDF5 caffemodel, by content."""
    if is_hdf5(path):
        return "hdf5", load_caffemodel(path)
    if looks_like_text(path):
        return "prototxt", load_net(path)
    return "caffemodel", load_caffemodel(path)


def bilinear_check(weight: np.ndarray) -> bool | None:
    """``port.ops.is_bilinear(weight)``, or None when port.ops (torch) is not available."""
    try:
        import torch
        from port.ops import is_bilinear
        return bool(is_bilinear(torch.from_numpy(np.array(weight, np.float32))))
    except Exception:  # no torch, no port.ops yet, or a shape it does not take: unknown
        return None


def layer_record(layer) -> dict[str, Any]:
    """One layer as a JSON-ready dict."""
    count = sum(int(b.size) for b in layer.blobs)
    rec = {"name": layer.name, "type": layer.type, "bottom": layer.bottom, "top": layer.top,
           "blobs": [list(map(int, b.shape)) for b in layer.blobs],
           "params": count, "bytes": sum(int(b.nbytes) for b in layer.blobs)}
    if layer.type == "Deconvolution" and layer.blobs:
        rec["bilinear"] = bilinear_check(layer.blobs[0])
    return rec


def summary(path: str) -> dict[str, Any]:
    """Everything ``inspect`` shows, as a dict."""
    fmt, net = load_any(path)
    layers = [layer_record(layer) for layer in net.layers]
    return {"path": path, "format": fmt, "name": net.name,
            "inputs": {k: list(v) for k, v in net.inputs.items()}, "layers": layers,
            "params": sum(r["params"] for r in layers), "bytes": sum(r["bytes"] for r in layers)}


def _fmt_line(r: dict[str, Any]) -> str:
    shapes = " ".join("x".join(map(str, s)) or "scalar" for s in r["blobs"])
    line = f"{r['name']:<24} {r['type']:<16} {','.join(r['bottom']) or '-'} -> {','.join(r['top']) or '-'}"
    if r["blobs"]:
        line += f"  [{shapes}]  {r['params']:,} params  {r['bytes']:,} B"
    if "bilinear" in r:
        line += {True: "  bilinear", False: "  not bilinear", None: "  bilinear: unknown"}[r["bilinear"]]
    return line


def render(s: dict[str, Any]) -> str:
    """The human-readable listing."""
    head = [f"{s['path']}: {s['format']}, net {s['name']!r}, {len(s['layers'])} layers"]
    head += [f"input {k}: {'x'.join(map(str, v)) or '?'}" for k, v in s["inputs"].items()]
    lines = head + [_fmt_line(r) for r in s["layers"]]
    lines.append(f"total: {s['params']:,} parameters, {s['bytes']:,} bytes "
                 f"({s['bytes'] / 2**20:.1f} MiB)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m port inspect", description=__doc__.split("\n")[0])
    parser.add_argument("file", help="a .prototxt, .caffemodel or .caffemodel.h5")
    parser.add_argument("--json", action="store_true", help="print JSON for machines")
    args = parser.parse_args(argv)
    try:
        s = summary(args.file)
    except (CaffeFormatError, OSError) as e:
        print(f"python -m port inspect: {e}", file=sys.stderr)
        return 1
    print(json.dumps(s, indent=1) if args.json else render(s))
    return 0


if __name__ == "__main__":
    sys.exit(main())
