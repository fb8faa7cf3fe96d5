"""``python -m reproduce demo`` plumbing, with a small net: the released FCN-8s weights are not
available here, so the agreement checked is that of a 1/16-width random FCN-8s, computed
again independently; with the real weights the same code compares with the real output."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from reproduce.demo import MIN_AGREEMENT, compare_with_reference
from reproduce.palette import voc_palette


def _decode(rgb: np.ndarray) -> np.ndarray:
    """Colours back to classes with a plain dictionary (independent of palette.py's search)."""
    table = {tuple(int(v) for v in c): i for i, c in enumerate(voc_palette())}
    return np.array([table.get(tuple(int(v) for v in px), -1)
                     for px in rgb.reshape(-1, 3)]).reshape(rgb.shape[:2])


def test_compare_with_reference_counts_equal_pixels():
    rng = np.random.default_rng(0)
    pred = rng.integers(0, 21, (7, 9))
    reference = voc_palette()[pred]
    assert compare_with_reference(pred, reference).agreement == 1.0
    changed = pred.copy()
    changed[0, :4] = (changed[0, :4] + 1) % 21
    result = compare_with_reference(changed, reference)
    assert result.agreement == pytest.approx(1 - 4 / pred.size)
    reference[1, 1] = (1, 2, 3)  # not a palette colour: counted, and never agreeing
    assert compare_with_reference(pred, reference).unknown_colours == 1


def test_demo_runs_on_the_upstream_image(make_caffemodel, upstream_dir, tmp_path, monkeypatch,
                                        capsys):
    from port.models import get_model
    from reproduce.__main__ import main
    monkeypatch.setenv("FCN_PORT_UPSTREAM", str(upstream_dir))
    weights = make_caffemodel(tmp_path / "fcn8s-w16.caffemodel", net="voc-fcn8s")
    out = tmp_path / "demo"
    # random weights: far below what the released ones give, so the command fails ...
    assert main(["demo", "--weights", str(weights), "--out", str(out), "--device", "cpu",
                 "--cache", str(tmp_path / "cache")]) == 1
    report = json.loads((out / "demo.json").read_text())
    assert report["passed"] is False and report["min_agreement_percent"] == MIN_AGREEMENT
    assert "below the 99%" in capsys.readouterr().err
    # ... unless told that these are weights of the user's own
    assert main(["demo", "--weights", str(weights), "--out", str(out), "--device", "cpu",
                 "--cache", str(tmp_path / "cache"), "--min-agreement", "0"]) == 0
    said = capsys.readouterr().out
    assert "at least the 0%" not in said and "no agreement required" in said   # issue 19.13
    report = json.loads((out / "demo.json").read_text())
    # overlay.png: three titled columns (image | released | ours) above a class legend
    picture = np.array(Image.open(out / "overlay.png").convert("RGB"))
    h, w = np.array(Image.open(upstream_dir / "demo" / "image.jpg")).shape[:2]
    assert picture.shape[1] == 3 * w and picture.shape[0] > h
    assert (picture[:8] != 255).any()                     # the column titles
    # the same net and image, run here by hand as upstream infer.py does
    model = get_model("fcn8s", weights=next((tmp_path / "cache").glob("*.safetensors"))).eval()
    rgb = np.array(Image.open(upstream_dir / "demo" / "image.jpg"), dtype=np.float32)
    data = (rgb[:, :, ::-1] - np.array((104.00698793, 116.66876762, 122.67891434),
                                       dtype=np.float32)).transpose(2, 0, 1).copy()
    with torch.inference_mode():
        ours = model(data=torch.from_numpy(data)[None])[0].argmax(0).numpy()
    np.testing.assert_array_equal(np.array(Image.open(out / "prediction.png")), ours)
    released = _decode(np.array(Image.open(upstream_dir / "demo" / "output.png").convert("RGB")))
    assert report["agreement"] == pytest.approx(float((ours == released).mean()), abs=0)
    assert report["classes_released"] == sorted(int(c) for c in np.unique(released) if c >= 0)


def test_demo_help_describes_the_command_in_whole_sentences(capsys):
    from reproduce.__main__ import main
    from reproduce.demo import DESCRIPTION
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--help"])
    assert exit_info.value.code == 0
    squeeze = lambda text: "".join(text.split())  # noqa: E731  (argparse re-wraps lines)
    assert squeeze(DESCRIPTION) in squeeze(capsys.readouterr().out)   # all of it, to the end
    assert DESCRIPTION.rstrip().endswith(".") and "output.png" in DESCRIPTION
    from reproduce.demo import _parser
    assert all(action.help for action in _parser()._actions)  # every option says what it is


def test_the_released_prediction_passes_the_demo(make_caffemodel, upstream_dir, tmp_path,
                                                 monkeypatch, capsys):
    """A net whose prediction is the released one (the predictor replaced by output.png's
    labels) passes with 100% and exits 0: the threshold is met by what the released weights
    give."""
    from reproduce import demo
    from reproduce.__main__ import main
    monkeypatch.setenv("FCN_PORT_UPSTREAM", str(upstream_dir))
    released = _decode(np.array(Image.open(upstream_dir / "demo" / "output.png").convert("RGB")))
    monkeypatch.setattr(demo, "predict_image", lambda *args, **kwargs: released)
    weights = make_caffemodel(tmp_path / "fcn8s-w16.caffemodel", net="voc-fcn8s")
    assert main(["demo", "--weights", str(weights), "--out", str(tmp_path / "demo"),
                 "--device", "cpu", "--cache", str(tmp_path / "cache")]) == 0
    assert "100.000% of pixels agree" in capsys.readouterr().out


def test_the_pass_line_says_what_was_required():
    from reproduce.demo import _passed_line
    assert "no agreement required" in _passed_line(0) and "0%" not in _passed_line(0).split(";")[0]
    assert "released weights give" in _passed_line(MIN_AGREEMENT)
    assert "asked for" in _passed_line(50)
