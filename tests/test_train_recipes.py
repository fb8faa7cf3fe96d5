"""The recorded recipes equal upstream's solver.prototxt files and data layers' param_str."""
from __future__ import annotations

import ast
import re

import numpy as np
import pytest

from port.caffe import load_net
from port.training.solver import SolverParameter
from port.hub import registry
from reproduce.training.recipes import RECIPES, RecipeError, get_recipe, solver_parameter

RELEASED = {"fcn32s", "fcn16s", "fcn8s", "fcn8s_atonce", "fcn_alexnet", "siftflow_fcn32s",
            "siftflow_fcn16s", "siftflow_fcn8s", "nyud_fcn32s_color", "nyud_fcn32s_hha",
            "nyud_fcn32s_color_hha", "pascalcontext_fcn32s", "pascalcontext_fcn16s",
            "pascalcontext_fcn8s"}
FIELDS = ("base_lr", "momentum", "iter_size", "max_iter", "snapshot", "lr_policy", "weight_decay",
          "display", "average_loss", "test_interval", "test_initialization", "type")


def test_one_recipe_per_released_net():
    from reproduce.training.recipes import CAST_RECIPES  # issue 21: the nets fcnize casts
    assert set(RECIPES) == RELEASED | set(CAST_RECIPES)
    assert get_recipe("voc-fcn32s".removeprefix("voc-")) is RECIPES["fcn32s"]
    with pytest.raises(RecipeError, match="no training recipe"):
        get_recipe("nyud-fcn32s-color-d")


def test_a_recipe_is_found_by_any_name_the_registry_takes():
    """``train`` reads a net's name as ``python -m reproduce`` does (the registry's
    ``normalize_name``: upstream's ``voc-`` folder names too), not by a rule of its own."""
    for name in ("voc-fcn32s", "VOC-FCN32s", "FCN32s", " fcn32s "):
        assert get_recipe(name) is RECIPES["fcn32s"]


@pytest.mark.parametrize("model", sorted(RELEASED))
def test_solver_settings_are_upstreams(model, upstream_dir):
    recipe = RECIPES[model]
    shipped = SolverParameter.read(upstream_dir / recipe.upstream_dir / "solver.prototxt")
    ours = solver_parameter(recipe)
    for name in FIELDS:  # float fields are caffe.proto floats: compared as float32
        a, b = getattr(ours, name), getattr(shipped, name)
        assert (np.float32(a) == np.float32(b)) if isinstance(a, float) else a == b, name
    assert ours.test_iter == shipped.test_iter


@pytest.mark.parametrize("model", sorted(RELEASED))
def test_training_split_and_seed_are_the_data_layers(model, upstream_dir):
    recipe = RECIPES[model]
    folder = upstream_dir / recipe.upstream_dir
    train = next(p for p in (folder / "train.prototxt", folder / "trainval.prototxt") if p.is_file())
    layer = next(l for l in load_net(train).layers if l.type == "Python")
    params = ast.literal_eval(layer.python_param.param_str)
    assert params["seed"] == recipe.seed == 1337
    assert params["split"] == recipe.train_split


def test_schedule_and_inits():
    assert RECIPES["fcn32s"].iterations == 100000 == RECIPES["fcn32s"].solver.max_iter
    assert RECIPES["fcn8s_atonce"].iterations == 300000
    assert RECIPES["siftflow_fcn32s"].step == RECIPES["nyud_fcn32s_color"].step == 2000
    assert RECIPES["pascalcontext_fcn32s"].step == 8000
    assert RECIPES["fcn16s"].init.sources == ("fcn32s",)
    assert RECIPES["fcn8s"].init.sources == ("fcn16s",)
    for model, recipe in RECIPES.items():
        for source in recipe.init.sources:
            if recipe.init.kind == "classifier":
                assert registry.get(source).kind == "caffemodel"
            else:
                assert source in RECIPES
    assert RECIPES["nyud_fcn32s_color_hha"].init.suffixes == ("color", "hha")
    assert re.search("solve.py", RECIPES["fcn8s"].source)


def test_classifiers_in_the_registry():
    vgg = registry.get("VGG_ILSVRC_16_layers.caffemodel")
    assert vgg.urls[0].startswith("http://www.robots.ox.ac.uk/~vgg/") and not vgg.known
    caffenet = registry.get("classifier/bvlc-reference-caffenet")
    assert caffenet.known[0].sha1 == "4c8d77deb20ea792f84eb5e6d0a11ca0a8660a46"


def _make_n(target, tmp_path):
    import shutil
    import subprocess
    from pathlib import Path
    if shutil.which("make") is None:
        pytest.skip("no make")
    repo = Path(__file__).resolve().parents[1]
    venv = tmp_path / "venv"
    (venv).mkdir(exist_ok=True)
    (venv / ".installed").touch()  # an installed venv: make -n prints only the training
    proc = subprocess.run(["make", "-s", "-n", "-C", str(repo), target, f"VENV={venv}",
                           f"RUNS={tmp_path / 'runs'}", "DATA=/d"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return [line.split(" train ", 1)[1].split()[0] for line in proc.stdout.splitlines()
            if " -m reproduce train " in line]


def test_make_targets_run_the_staged_chains(tmp_path):
    for model in RECIPES:
        dashed = model.replace("_", "-")
        assert _make_n(f"train-{dashed}", tmp_path)[-1] == dashed
    assert _make_n("train-fcn8s", tmp_path) == ["fcn32s", "fcn16s", "fcn8s"]
    assert _make_n("train-fcn8s-atonce", tmp_path) == ["fcn8s-atonce"]
    assert _make_n("train-nyud-fcn32s-color-hha", tmp_path) == [
        "nyud-fcn32s-color", "nyud-fcn32s-hha", "nyud-fcn32s-color-hha"]


def test_makefile_passes_init_to_exactly_the_stages_that_start_from_a_classifier():
    """``make train-* INIT=FILE`` (the hint of a failed classifier download) reaches the
    recipes whose init is an ILSVRC classifier, and no later stage."""
    import re
    from pathlib import Path
    from reproduce.training.recipes import RECIPES
    makefile = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    listed = re.search(r"^TRAIN_CLASSIFIER_INIT := (.*?[^\\])$", makefile, re.M | re.S).group(1)
    expected = {name.replace("_", "-") for name, r in RECIPES.items() if r.init.kind == "classifier"}
    assert set(listed.replace("\\", " ").split()) == expected


# -- the VOC year a recipe names (FCN-GoogLeNet: the paper's VOC 2011) -----------------------
VOC_RELEASED = sorted(m for m in RELEASED if RECIPES[m].val_dataset == "voc")


def test_googlenet_asks_for_voc_2011_and_the_released_recipes_for_no_year():
    from reproduce.training.recipes import reader_options
    googlenet = RECIPES["fcn_googlenet"]
    assert googlenet.year == "2011"
    assert reader_options(googlenet, "voc") == {"year": googlenet.year}
    for model in RELEASED:  # SBD train has no year folders; seg11valid keeps its preference
        recipe = RECIPES[model]
        assert recipe.year is None
        assert reader_options(recipe, recipe.train_dataset) == reader_options(recipe, recipe.val_dataset) == {}


@pytest.mark.parametrize("model", VOC_RELEASED)
def test_released_voc_recipes_validate_on_upstreams_voc_dir(model, upstream_dir, tmp_path):
    """Upstream's val.prototxt reads seg11valid from ``voc_dir`` VOC2011: with both years under
    --data the released recipes read it from there, asking for no year."""
    from reproduce.training.recipes import reader_options
    from reproduce.datasets import VOC
    from train_trees import make_sbd_voc
    recipe = RECIPES[model]
    layer = next(l for l in load_net(upstream_dir / recipe.upstream_dir / "val.prototxt").layers
                 if l.type == "Python")
    params = ast.literal_eval(layer.python_param.param_str)
    assert params["split"] == recipe.val_split
    root = make_sbd_voc(tmp_path, n_train=1, n_val=1)
    import shutil
    shutil.copytree(root / "VOCdevkit" / "VOC2011", root / "VOCdevkit" / "VOC2012")
    reader = VOC(root, recipe.val_split, **reader_options(recipe, recipe.val_dataset))
    assert reader.root.name == params["voc_dir"].rsplit("/", 1)[-1]


def test_a_run_on_another_year_is_one_data_shortfall():
    from types import SimpleNamespace
    from reproduce.training.report import training_shortfalls, year_shortfall
    googlenet = get_recipe("fcn_googlenet")
    other = "2012"
    line = year_shortfall(googlenet, {"train": other, "val": other})
    assert line == (f"DATA: trained on VOC{other} train and validated on VOC{other} val; the "
                    f"paper's recipe used VOC{googlenet.year} (no VOC{googlenet.year} folder "
                    f"found under --data)")
    assert year_shortfall(googlenet, {"train": googlenet.year, "val": other}) == (
        f"DATA: validated on VOC{other} val; the paper's recipe used VOC{googlenet.year} (no "
        f"VOC{googlenet.year} folder found under --data)")
    assert year_shortfall(googlenet, {"train": googlenet.year, "val": googlenet.year}) is None
    # the released recipes name no year: VOC2012's copy of seg11valid is no shortfall
    assert year_shortfall(get_recipe("fcn32s"), {"train": None, "val": other}) is None
    auto = SimpleNamespace(init="auto", width_divisor=1)
    classifier = {"sources": [{"file": "bvlc_googlenet.caffemodel", "sha256": "y"}]}
    listed = {"dataset": "voc", "split": "train", "kind": "dataset", "images": 1112, "ids_sha256": "x"}
    found = training_shortfalls(googlenet, auto, googlenet.iterations, 1, classifier, listed, {},
                                {"train": other, "val": other})
    assert found == [line]
    assert training_shortfalls(googlenet, auto, googlenet.iterations, 1, classifier, listed, {},
                               {"train": googlenet.year, "val": googlenet.year}) == []
