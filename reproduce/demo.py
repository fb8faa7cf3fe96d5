"""``python -m reproduce demo``: the ported FCN-8s on the upstream demo image, compared with the
released ``demo/output.png``.

Upstream ``infer.py`` loads ``demo/image.jpg`` (VOC 2007_000129), subtracts the VOC mean in BGR,
runs ``voc-fcn8s/deploy.prototxt`` with ``fcn8s-heavy-pascal.caffemodel`` and takes
``score.argmax(0)``; ``demo/output.png`` is that prediction drawn in the VOC palette. Here the
same image goes through ``port.models.fcn8s`` and the prediction is compared pixel by pixel
with the released one (decoded back to class indices through the palette).

The image and output come from a local copy of the upstream repository (``$FCN_PORT_UPSTREAM``
or ``../shared/upstream``) or are fetched, checksum-verified, from commit 1305c73.

What the released weights give: ``demo/output.png`` *is* their prediction (Caffe, infer.py), so
in Caffe they agree with it on 100% of the pixels. A faithful port with the same weights
differs only where two classes' scores are tied to float rounding (another BLAS summation
order) or where another libjpeg decodes a few pixels of the JPEG differently: a handful of
boundary pixels. The command therefore requires ``MIN_AGREEMENT`` = 99% (``--min-agreement``)
and exits 1 below it. For scale: the released prediction agrees with the image's ground truth
(``demo/label.png``) on 84.3% of its non-void pixels, and FCN-8s nets of random weights agree
with it on 0% to 5% (0.000% for a 1/16-width one of seed 0, 4.868% in issue 13). The released
caffemodel cannot be fetched on the machines this was written on, so the port's own figure
with it is not measured here: run the command where it can.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

import port
from port.models import get_meta, get_model
from port.run.devices import default_device

from reproduce import harness as H
from reproduce import resolve as R
from port.run import speed
from port.fileio import atomic_open, write_text_atomic
from port.models.classes import VOC_CLASSES
from reproduce.palette import colour_to_label, save_label_png
from reproduce.report import compose_overlay

__all__ = ["DemoResult", "compare_with_reference", "predict_image", "main"]

#: ``python -m reproduce demo --help``: what the command does, in whole sentences.
DESCRIPTION = (
    "Run the ported FCN-8s on the upstream demo image (demo/image.jpg, VOC 2007_000129) as "
    "upstream infer.py does (BGR minus the VOC mean, forward, argmax over the classes) in strict "
    "fp32, and compare the prediction pixel by pixel with the released demo/output.png. The "
    "image and output come from $FCN_PORT_UPSTREAM or ../shared/upstream, else they are fetched "
    "and checksum-verified from the upstream repository at commit 1305c73. Writes "
    "prediction.png (VOC palette), overlay.png (image | released | ours) and demo.json (the "
    "agreement, the differing pixels, the classes of each) into --out.")

DEMO_FILES = {"image": ("demo/image.jpg", "demo/image"), "output": ("demo/output.png", "demo/output")}
#: The least agreement with demo/output.png the released weights must give through the port
#: (percent; module docstring: 100% in Caffe, minus near-tied pixels and JPEG decoding).
MIN_AGREEMENT = 99.0


@dataclass(frozen=True)
class DemoResult:
    """Our prediction against the released one."""

    prediction: np.ndarray       # HxW class indices
    reference: np.ndarray        # HxW class indices decoded from output.png (-1: not a palette colour)
    agreement: float             # fraction of pixels where the classes are equal
    unknown_colours: int         # pixels of output.png whose colour is not in the palette

    def as_dict(self) -> dict:
        classes = lambda a: sorted(int(c) for c in np.unique(a) if c >= 0)  # noqa: E731
        return {"agreement": self.agreement, "pixels": int(self.prediction.size),
                "differing_pixels": int((self.prediction != self.reference).sum()),
                "unknown_colours": self.unknown_colours,
                "classes_ours": classes(self.prediction),
                "classes_released": classes(self.reference)}


def predict_image(predict: Callable[[dict], dict], preprocess: Callable[..., np.ndarray],
                  rgb: np.ndarray, device: torch.device, output: str = "score") -> np.ndarray:
    """infer.py on one RGB image: preprocess, forward, argmax over the classes."""
    data = torch.from_numpy(preprocess(rgb))[None].to(device)
    with torch.inference_mode():
        score = predict({"data": data})[output]
    return score[0].argmax(0).cpu().numpy()


def compare_with_reference(prediction: np.ndarray, reference_rgb: np.ndarray) -> DemoResult:
    """Pixel agreement of ``prediction`` with a palette-coloured reference image."""
    reference, unknown = colour_to_label(reference_rgb, name="reference output")
    if reference.shape != prediction.shape:
        raise ValueError(f"reference output is {reference.shape}, prediction {prediction.shape}")
    agreement = float((prediction == reference).mean())
    return DemoResult(prediction, reference, agreement, unknown)


#: overlay.png's column titles.
OVERLAY_CAPTIONS = ("image", "released demo/output.png", "ours (fcn-port)")


def write_demo(out: Path, rgb: np.ndarray, result: DemoResult, info: dict) -> None:
    """prediction.png (palette), overlay.png (image | released | ours, each column titled,
    a legend of the classes shown: ``report.compose_overlay``) and demo.json."""
    save_label_png(result.prediction, out / "prediction.png")
    released = np.where(result.reference >= 0, result.reference, 0)
    side = compose_overlay({"image": rgb, "truth": released.astype(np.uint8),
                            "prediction": result.prediction.astype(np.uint8)},
                           VOC_CLASSES, OVERLAY_CAPTIONS)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_open(out / "overlay.png") as handle:
        Image.fromarray(side).save(handle, format="PNG")
    write_text_atomic(out / "demo.json", json.dumps({**info, **result.as_dict()}, indent=1) + "\n")


def _passed_line(min_agreement: float) -> str:
    """What a pass means: the released weights' agreement, another threshold, or none asked."""
    if min_agreement <= 0:
        return (f"OK: no agreement required (--min-agreement {min_agreement:g}); "
                f"{MIN_AGREEMENT:g}% is what the released weights must give")
    if min_agreement == MIN_AGREEMENT:
        return (f"OK: at least the {min_agreement:g}% the released weights give through an "
                f"exact port (100% in Caffe)")
    return f"OK: at least the {min_agreement:g}% asked for (--min-agreement)"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m reproduce demo", description=DESCRIPTION)
    p.add_argument("--version", action="version", version=f"%(prog)s {port.__version__}")
    p.add_argument("--weights", help="fcn8s weights: .safetensors, .caffemodel or "
                   ".caffemodel.h5 (default: the released fcn8s-heavy-pascal.caffemodel, "
                   "fetched, verified and converted once)")
    p.add_argument("--device", choices=("cuda", "cpu"),
                   default=default_device(),
                   help="where the net runs (default: cuda when available)")
    p.add_argument("--out", type=Path, help="folder for prediction.png, overlay.png and "
                   "demo.json (default: ./reports/demo)")
    p.add_argument("--cache", type=Path, help="download/conversion cache (default: "
                   "$FCN_PORT_CACHE, else $XDG_CACHE_HOME/fcn-port, else ~/.cache/fcn-port)")
    p.add_argument("--min-agreement", type=float, default=MIN_AGREEMENT, metavar="PERCENT",
                   help=f"exit 1 when fewer pixels than this agree with the released output "
                        f"(default {MIN_AGREEMENT:g}: the released weights give 100%% in Caffe; "
                        f"0 for weights of your own)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.out = args.out or R.default_report_dir("demo")
    device = torch.device(args.device)
    paths = {k: R.upstream_file(*v) for k, v in DEMO_FILES.items()}
    weights = R.resolve_weights("fcn8s", args.weights, args.cache)
    meta = get_meta("fcn8s")
    # infer.py's numbers: IEEE fp32, no TF32 (the Runner of strict fp32)
    runner = H.prepare_model(get_model("fcn8s", weights=weights.path),
                             H.EvalConfig(device=device, precision=speed.STRICT))
    rgb = np.array(Image.open(paths["image"]).convert("RGB"))
    prediction = predict_image(H.ModelPredictor(runner, meta.inputs, meta.outputs),
                               meta.preprocess[0], rgb, device)
    result = compare_with_reference(prediction, np.array(Image.open(paths["output"]).convert("RGB")))
    percent = 100 * result.agreement
    passed = percent >= args.min_agreement
    write_demo(args.out, rgb, result, {"image": str(paths["image"]), "released_output":
                                       str(paths["output"]), "weights_sha256": weights.sha256,
                                       "min_agreement_percent": args.min_agreement,
                                       "passed": passed})
    print(f"FCN-8s on {paths['image']}: {percent:.3f}% of pixels agree with the released "
          f"{paths['output']} ({result.as_dict()['differing_pixels']} differ); written to "
          f"{args.out}")
    if passed:
        print(_passed_line(args.min_agreement))
        return 0
    print(f"python -m reproduce demo: {percent:.3f}% agreement is below the "
          f"{args.min_agreement:g}% the released weights give (100% in Caffe): these are not "
          f"the released FCN-8s weights, or the port computes something else "
          f"(--min-agreement 0 for weights of your own)", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
