"""Each released net's training recipe, as upstream ran it, recorded once as typed data.

Source: shelhamer/fcn.berkeleyvision.org at 1305c73, ``<model>/solver.prototxt`` (the solver
settings), ``<model>/solve.py`` (the initial weights, ``surgery.interp`` of the ``'up'`` layers,
and the schedule: ``for _ in range(R): solver.step(S); score.seg_tests(...)``), and the data
layer's ``param_str`` of ``<model>/train.prototxt`` / ``trainval.prototxt`` (training split,
``seed: 1337``). The values are written here as data (the package must run without a copy of
upstream); ``tests/test_train_recipes.py`` checks every one against the shipped
``solver.prototxt`` files.

Notes on what upstream does that a recipe records rather than changes:

- ``solve.py`` never lets the solver test (``test_interval: 999999999``): it validates every
  ``step`` iterations itself. ``max_iter`` is not what stops a run either: ``Solver::Step(n)``
  runs n iterations whatever ``max_iter`` says, so a run is ``rounds * step`` iterations
  (SIFT Flow and NYUD: 50 x 2000 = 100,000 though ``max_iter`` reads 300,000; Context 50 x 8000
  = 400,000).
- The NYUD ``solve.py`` files score the undefined name ``val`` (they load ``test``): upstream's
  own script stops with a NameError at the first validation. The recipe validates on the
  ``test`` list it loaded, the papers' NYUD evaluation split.
- The NYUD data layer reads ``<nyud_dir>/trainval.txt``, which upstream never shipped (its
  repository holds ``data/nyud/train.txt`` and ``val.txt``, disjoint, 795 images together:
  Gupta et al.'s trainval). Without one in the dataset folder, ``trainval`` is train then val
  (``reproduce.splits.LISTS``); the set is upstream's, the order an assumption,
  and it decides which image each of upstream's draws picks. A run records the list it used.
- ``nyud-fcn32s-color-hha`` starts from two trained single-stream nets transplanted with the
  suffixes ``color`` and ``hha`` (upstream used its own 28k/60k-iteration snapshots); ``auto``
  here takes the final weights of this package's own ``nyud-fcn32s-color`` and
  ``nyud-fcn32s-hha`` runs.
- ``auto`` for FCN-32s-style nets is the ILSVRC classifier transplanted (``surgery.transplant``:
  fc6/fc7 coerced into convolutions, fc8 dropped), which is what upstream's
  ``vgg16-fcn.caffemodel`` / ``alexnet-fcn.caffemodel`` (the classifiers already cast into
  fully convolutional form, ``ilsvrc-nets/README.md``) hold; ``copy_from`` of those and this
  transplant give the same blobs.
"""
from __future__ import annotations

import difflib

from dataclasses import dataclass, replace
from typing import Any

from port.caffe.net import NetDef, netdef_from_message
from port.errors import PortError
from port.models import list_models
from port.models._registry import normalize_name
from port.models.cast_meta import CAST_MODELS

__all__ = ["RecipeError", "SolverSettings", "Init", "Recipe", "RECIPES", "get_recipe",
           "recipe_names", "STAGED_CHAINS", "UPSTREAM_SEED", "batchnorm_layers",
           "with_batch_statistics", "batchnorm_setting", "TRAIN_BATCHNORM", "recipe_kind",
           "reader_options"]

UPSTREAM = "shelhamer/fcn.berkeleyvision.org@1305c73"
#: ``'seed': 1337`` in every upstream training data layer's param_str.
UPSTREAM_SEED = 1337


class RecipeError(PortError):
    """A model without a recipe, or an override that does not fit one."""


@dataclass(frozen=True)
class SolverSettings:
    """The fields of an upstream ``solver.prototxt`` (caffe.proto ``SolverParameter``)."""

    base_lr: float
    momentum: float
    iter_size: int
    max_iter: int
    snapshot: int
    test_iter: int
    lr_policy: str = "fixed"
    weight_decay: float = 0.0005
    display: int = 20
    average_loss: int = 20
    test_interval: int = 999999999
    test_initialization: bool = False
    type: str = "SGD"


@dataclass(frozen=True)
class Init:
    """Where a run's weights start. ``kind``: ``"classifier"`` (a registry classifier caffemodel
    transplanted by layer name, ``surgery.transplant``), ``"stage"`` (the final weights of the
    recipes in ``sources``, copied by layer name as ``Net::copy_from``), or ``"fusion"`` (each
    source's final weights transplanted with its suffix, ``surgery.transplant(..., suffix=)``).
    ``upstream`` is the file upstream's ``solve.py`` names."""

    kind: str
    sources: tuple[str, ...]
    upstream: str
    suffixes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Recipe:
    """One released net's training as upstream ``<upstream_dir>/solve.py`` runs it."""

    model: str                       # port.models builder name
    upstream_dir: str
    solver: SolverSettings
    step: int                        # solver.step(step) between validations
    rounds: int                      # for _ in range(rounds)
    train_dataset: str               # reproduce.datasets reader
    train_split: str
    val_dataset: str
    val_split: str
    init: Init
    interp: bool = True              # surgery.interp of the 'up' (frozen Deconvolution) layers
    seed: int = UPSTREAM_SEED
    source: str = ""
    #: The VOC year the recipe trains and validates on, asked of every reader that has
    #: several (``reproduce.datasets.VOC``'s ``year``; :func:`reader_options`): FCN-GoogLeNet's
    #: ``"2011"``. None: each split's own preference (the released recipes: SBD train, which
    #: has no year folder, and seg11valid, read from VOC2011 first as upstream's ``voc_dir``).
    #: A run on another year goes on and says so (``reproduce.training.report.year_shortfall``).
    year: str | None = None
    #: What the recipe is, as its training verdict names it (:func:`recipe_kind`): upstream's
    #: own files (the released nets), the paper's text (FCN-GoogLeNet) or the project's own
    #: (FCN-ResNet).
    kind: str = "the upstream recipe"

    @property
    def iterations(self) -> int:
        """The iterations upstream's ``solve.py`` runs: ``rounds * step``."""
        return self.rounds * self.step

    def identity(self) -> dict[str, Any]:
        """What a snapshot must share with the run resuming it."""
        s = self.solver
        return {"model": self.model, "base_lr": s.base_lr, "momentum": s.momentum,
                "weight_decay": s.weight_decay, "lr_policy": s.lr_policy, "type": s.type,
                "train": f"{self.train_dataset}/{self.train_split}", "seed": self.seed}


def _solver(upstream_dir: str, base_lr: float, momentum: float = 0.99, iter_size: int = 1,
            max_iter: int = 100000, snapshot: int = 4000, test_iter: int = 736) -> SolverSettings:
    return SolverSettings(base_lr=base_lr, momentum=momentum, iter_size=iter_size,
                          max_iter=max_iter, snapshot=snapshot, test_iter=test_iter)


VGG16 = "classifier/vgg16-ilsvrc-2014"
CAFFENET = "classifier/bvlc-reference-caffenet"
_VGG_INIT = Init("classifier", (VGG16,), "../ilsvrc-nets/vgg16-fcn.caffemodel")


def _recipe(model: str, upstream_dir: str, solver: SolverSettings, step: int, rounds: int,
            train: tuple[str, str], val: tuple[str, str], init: Init) -> Recipe:
    return Recipe(model, upstream_dir, solver, step, rounds, train[0], train[1], val[0], val[1],
                  init, source=f"{UPSTREAM} {upstream_dir}/solver.prototxt, {upstream_dir}/solve.py")


_SBD_TRAIN, _SEG11 = ("sbd", "train"), ("voc", "seg11valid")
_SIFT_TRAIN, _SIFT_TEST = ("siftflow", "trainval"), ("siftflow", "test")
_NYUD_TRAIN, _NYUD_TEST = ("nyud", "trainval"), ("nyud", "test")
_CTX_TRAIN, _CTX_VAL = ("pascalcontext", "train"), ("pascalcontext", "val")


def _stage(prev: str, upstream: str) -> Init:
    return Init("stage", (prev,), upstream)


RECIPES: dict[str, Recipe] = {r.model: r for r in (
    _recipe("fcn32s", "voc-fcn32s", _solver("voc-fcn32s", 1e-10), 4000, 25, _SBD_TRAIN, _SEG11,
            _VGG_INIT),
    _recipe("fcn16s", "voc-fcn16s", _solver("voc-fcn16s", 1e-12), 4000, 25, _SBD_TRAIN, _SEG11,
            _stage("fcn32s", "../voc-fcn32s/voc-fcn32s.caffemodel")),
    _recipe("fcn8s", "voc-fcn8s", _solver("voc-fcn8s", 1e-14), 4000, 25, _SBD_TRAIN, _SEG11,
            _stage("fcn16s", "../voc-fcn16s/voc-fcn16s.caffemodel")),
    _recipe("fcn8s_atonce", "voc-fcn8s-atonce", _solver("voc-fcn8s-atonce", 1e-10, max_iter=300000),
            4000, 75, _SBD_TRAIN, _SEG11, _VGG_INIT),
    _recipe("fcn_alexnet", "voc-fcn-alexnet",
            _solver("voc-fcn-alexnet", 1e-4, momentum=0.9, iter_size=20), 4000, 25,
            _SBD_TRAIN, _SEG11,
            Init("classifier", (CAFFENET,), "../ilsvrc-nets/alexnet-fcn.caffemodel")),
    _recipe("siftflow_fcn32s", "siftflow-fcn32s",
            _solver("siftflow-fcn32s", 1e-10, max_iter=300000, snapshot=0, test_iter=200),
            2000, 50, _SIFT_TRAIN, _SIFT_TEST, _VGG_INIT),
    _recipe("siftflow_fcn16s", "siftflow-fcn16s",
            _solver("siftflow-fcn16s", 1e-12, max_iter=300000, snapshot=0, test_iter=200),
            2000, 50, _SIFT_TRAIN, _SIFT_TEST,
            _stage("siftflow_fcn32s", "../siftflow-fcn32s/siftflow-fcn32s.caffemodel")),
    _recipe("siftflow_fcn8s", "siftflow-fcn8s",
            _solver("siftflow-fcn8s", 1e-12, max_iter=300000, snapshot=0, test_iter=200),
            2000, 50, _SIFT_TRAIN, _SIFT_TEST,
            _stage("siftflow_fcn16s", "../siftflow-fcn16s/siftflow-fcn16s.caffemodel")),
    _recipe("nyud_fcn32s_color", "nyud-fcn32s-color",
            _solver("nyud-fcn32s-color", 1e-10, max_iter=300000, snapshot=2000, test_iter=654),
            2000, 50, _NYUD_TRAIN, _NYUD_TEST, _VGG_INIT),
    _recipe("nyud_fcn32s_hha", "nyud-fcn32s-hha",
            _solver("nyud-fcn32s-hha", 1e-10, max_iter=300000, snapshot=2000, test_iter=654),
            2000, 50, _NYUD_TRAIN, _NYUD_TEST, _VGG_INIT),
    _recipe("nyud_fcn32s_color_hha", "nyud-fcn32s-color-hha",
            _solver("nyud-fcn32s-color-hha", 1e-12, max_iter=300000, snapshot=2000, test_iter=654),
            2000, 50, _NYUD_TRAIN, _NYUD_TEST,
            Init("fusion", ("nyud_fcn32s_color", "nyud_fcn32s_hha"),
                 "../nyud-rgb-32s/nyud-rgb-32s-28k.caffemodel, ../nyud-hha-32s/nyud-hha-32s-60k.caffemodel",
                 suffixes=("color", "hha"))),
    _recipe("pascalcontext_fcn32s", "pascalcontext-fcn32s",
            _solver("pascalcontext-fcn32s", 1e-10, max_iter=300000, test_iter=5105),
            8000, 50, _CTX_TRAIN, _CTX_VAL, _VGG_INIT),
    _recipe("pascalcontext_fcn16s", "pascalcontext-fcn16s",
            _solver("pascalcontext-fcn16s", 1e-12, max_iter=300000, test_iter=5105),
            8000, 50, _CTX_TRAIN, _CTX_VAL,
            _stage("pascalcontext_fcn32s", "../pascalcontext-fcn32s/pascalcontext-fcn32s.caffemodel")),
    _recipe("pascalcontext_fcn8s", "pascalcontext-fcn8s",
            _solver("pascalcontext-fcn8s", 1e-14, max_iter=300000, test_iter=5105),
            8000, 50, _CTX_TRAIN, _CTX_VAL,
            _stage("pascalcontext_fcn16s", "../pascalcontext-fcn16s/pascalcontext-fcn16s.caffemodel")),
)}

# -- the nets cast from a classifier (port.models.fcnize; issue 21 item 3) ---------------------
#: FCN-GoogLeNet as the paper trained it (CVPR 2015 / arXiv 1411.4038 v2, section 4.3
#: "Experimental framework" and 4.1; read in transcriptions only: ../shared/reference/
#: classifier-facts.md 1a-1c). Each setting and where it comes from:
#: - base_lr 5e-5, lr_policy fixed: "fixed learning rates of 1e-3, 1e-4, and 5e-5 for
#:   FCN-AlexNet, FCN-VGG16, and FCN-GoogLeNet" (printed "5-5": the "x10" dropped).
#: - momentum 0.9; bias lr doubled and score layer zero-initialised: fcnize writes upstream's
#:   ``param`` (bias lr_mult 2) and leaves score_fr at Caffe's constant 0.
#: - weight_decay 5e-4: the paper says "5e-4 or 2e-4" without saying which net got which;
#:   5e-4 is upstream's everywhere (a choice, not a fact).
#: - minibatch of 20 images: iter_size 20 of one image each, as upstream's voc-fcn-alexnet
#:   realises the same 20-image batch; the loss averaged over valid pixels (``normalize:
#:   true``, FCN-GoogLeNet's ``loss_normalization``): not said in the paper, inferred from its
#:   rates (5e-5 is far too large for a summed loss).
#: - Dropout kept: GoogLeNet's last Dropout went with the final pooling the paper discards.
#: - data: VOC 2011 segmentation train (1112 images, "which we used for Table 1"), validated
#:   on VOC 2011 seg val (Table 1's set, by the facts file's reading): ``year="2011"``, so a
#:   ``--data`` holding VOC2011 and VOC2012 reads VOC2011 for both (VOC's ``val`` alone would
#:   prefer VOC2012); with only VOC2012 the run goes on on it, one shortfall line saying so.
#: - iterations: "at least 175 epochs": 175 x 1112 / 20 = 9730 updates; 10000 here (25 x 400).
#: Not known: augmentation (none used), the exact iteration count, the seed.
GOOGLENET = "classifier/bvlc-googlenet"
_PAPER_T1 = ("CVPR 2015 (arXiv 1411.4038 v2) sections 4.1 and 4.3, as transcribed in "
             "reference/classifier-facts.md; weight decay, loss normalisation and iteration "
             "count are choices (see reproduce/training/recipes.py)")
#: FCN-ResNet: the project's own recipe, no published number. Upstream's heavy VOC recipe
#: (voc-fcn32s/16s/8s solver.prototxt and solve.py: batch 1, summed loss, momentum 0.99,
#: base_lr 1e-10 / 1e-12 / 1e-14, staged 32s -> 16s -> 8s, SBD train, seg11valid) on the cast
#: ResNet, whose BatchNorm layers keep the released ``use_global_stats: true`` in the train
#: net: frozen at the classifier's statistics (with batch 1, batch statistics would be those
#: of one image).
_OWN = ("the project's own recipe: upstream's heavy VOC recipe ({0}/solver.prototxt, "
        "{0}/solve.py) on a ResNet cast by fcnize, BatchNorm frozen; no published number")


def _cast_recipe(model: str, follows: str, solver: SolverSettings, step: int, rounds: int,
                 train: tuple[str, str], val: tuple[str, str], init: Init, source: str,
                 year: str | None = None, kind: str = "the project's own recipe") -> Recipe:
    return Recipe(model, follows, solver, step, rounds, train[0], train[1], val[0], val[1], init,
                  source=source, year=year, kind=kind)


def _resnet_recipes(depth: int) -> list[Recipe]:
    first = f"fcn_resnet{depth}_32s"
    classifier = Init("classifier", (f"classifier/resnet-{depth}",), f"ResNet-{depth}-model.caffemodel")
    return [
        _cast_recipe(first, "voc-fcn32s", _solver("voc-fcn32s", 1e-10), 4000, 25, _SBD_TRAIN,
                     _SEG11, classifier, _OWN.format("voc-fcn32s")),
        _cast_recipe(f"fcn_resnet{depth}_16s", "voc-fcn16s", _solver("voc-fcn16s", 1e-12), 4000, 25,
                     _SBD_TRAIN, _SEG11, _stage(first, f"{first} final weights"), _OWN.format("voc-fcn16s")),
        _cast_recipe(f"fcn_resnet{depth}_8s", "voc-fcn8s", _solver("voc-fcn8s", 1e-14), 4000, 25,
                     _SBD_TRAIN, _SEG11, _stage(f"fcn_resnet{depth}_16s", f"fcn_resnet{depth}_16s final weights"),
                     _OWN.format("voc-fcn8s")),
    ]


RECIPES.update({r.model: r for r in (
    _cast_recipe("fcn_googlenet", "fcn-googlenet",
                 _solver("fcn-googlenet", 5e-5, momentum=0.9, iter_size=20, max_iter=10000,
                         test_iter=1111),
                 400, 25, ("voc", "train"), ("voc", "val"),
                 Init("classifier", (GOOGLENET,), "bvlc_googlenet.caffemodel"), _PAPER_T1,
                 year="2011", kind="the paper's recipe"),
    *_resnet_recipes(50), *_resnet_recipes(101), *_resnet_recipes(152),
)})
#: The recipes of nets upstream never released (cast by fcnize): not checked against upstream files.
#: Which nets are cast is ``port.models.cast_meta``'s list (``CAST_MODELS``), not spelled here.
CAST_RECIPES = tuple(model for model in RECIPES if model in CAST_MODELS)



def recipe_kind(model: str) -> str:
    """What the recipe of ``model`` is, as its training verdict names it: ``the upstream
    recipe`` (the released nets: upstream's own files), ``the paper's recipe`` (FCN-GoogLeNet:
    the paper's text, the rest the project's choices) or ``the project's own recipe``
    (FCN-ResNet): its ``Recipe.kind``."""
    return get_recipe(model).kind


#: The staged chains ``make train-<last>`` runs, first stage first.
STAGED_CHAINS: dict[str, tuple[str, ...]] = {
    "fcn8s": ("fcn32s", "fcn16s", "fcn8s"),
    "siftflow_fcn8s": ("siftflow_fcn32s", "siftflow_fcn16s", "siftflow_fcn8s"),
    "pascalcontext_fcn8s": ("pascalcontext_fcn32s", "pascalcontext_fcn16s", "pascalcontext_fcn8s"),
    "nyud_fcn32s_color_hha": ("nyud_fcn32s_color", "nyud_fcn32s_hha", "nyud_fcn32s_color_hha"),
    **{f"fcn_resnet{d}_8s": tuple(f"fcn_resnet{d}_{s}s" for s in (32, 16, 8)) for d in (50, 101, 152)},
}


def recipe_names() -> list[str]:
    return sorted(RECIPES)


def get_recipe(model: str) -> Recipe:
    """The recipe of a released net, by builder name as the registry reads one (any case,
    dashes or underscores, upstream's ``voc-`` folders: ``normalize_name``)."""
    key = normalize_name(model)
    if key not in RECIPES:
        known = [n.replace("_", "-") for n in recipe_names()]
        near = difflib.get_close_matches(key.replace("_", "-"), known, n=1, cutoff=0.6)
        released = key in list_models()
        why = (f"did you mean {near[0]}?" if near and not released
               else "upstream released none for it")
        raise RecipeError(f"model {model!r} has no training recipe ({why}); recipes: "
                          f"{', '.join(known)}")
    return RECIPES[key]


# -- BatchNorm in the train net: frozen (the recipes), or trained (--train-batchnorm) -----------
#: ``reproduce train --train-batchnorm``: the train net's BatchNorm layers normalise with the
#: batch's statistics and update their moving sums each forward pass, instead of the recipe's
#: statistics frozen at the classifier's. A different recipe, said wherever the run is
#: recorded (log, weights metadata, report, training verdict).
#:
#: What the flag changes is the statistics only. The Scale layers after each BatchNorm learn
#: as the recipe's train net has them in either setting (fcnize keeps the classifier's layer
#: without ``param`` specs: Caffe's defaults, ``lr_mult: 1``, ``decay_mult: 1``): that learned
#: scale and shift is the batch normalisation paper's own gamma and beta, which Caffe puts in a
#: Scale layer (``batch_norm_layer.hpp``: "define a ScaleLayer configured with bias_term: true
#: after each BatchNormLayer"), so training BatchNorm leaves them learning, and the two
#: settings differ in one thing. (MSRA's practice for ResNet fine-tuning with frozen
#: statistics at one or two images a GPU -- their detection nets, R-FCN and Deformable
#: ConvNets -- freezes the Scale layers as well; the frozen recipe here does not, a choice of
#: the cast train net's, recorded with it.)
TRAIN_BATCHNORM = "--train-batchnorm"
_BATCHNORM_SETTINGS = {
    False: "frozen at the classifier's statistics (use_global_stats: true in the train net, the "
           "recipe's)",
    True: "batch statistics, the moving sums updated each forward pass (--train-batchnorm: "
          "use_global_stats unset, Caffe's TRAIN default; not the recipe's)"}


def batchnorm_layers(netdef: NetDef) -> list[str]:
    """The names of ``netdef``'s BatchNorm layers."""
    return [layer.name for layer in netdef.layers if layer.type == "BatchNorm"]


def batchnorm_setting(netdef: NetDef, train_batchnorm: bool, model: str = "") -> str | None:
    """How a run's BatchNorm layers normalise, in words for its log and report (None: the net
    has none). ``--train-batchnorm`` on a net without BatchNorm is refused in one line."""
    if not batchnorm_layers(netdef):
        if train_batchnorm:
            name = (model or netdef.name or "the net").replace("_", "-")
            raise RecipeError(f"{TRAIN_BATCHNORM}: {name} has no BatchNorm layer (the flag is "
                              f"for the nets with BatchNorm: fcn-resnet*)")
        return None
    return _BATCHNORM_SETTINGS[bool(train_batchnorm)]


def with_batch_statistics(netdef: NetDef) -> NetDef:
    """The train net of ``--train-batchnorm``: ``netdef`` with every BatchNorm layer's
    ``use_global_stats`` unset, Caffe's phase default (``BatchNormLayer::LayerSetUp``: false
    in TRAIN, so the batch's statistics normalise and ``Forward_cpu`` updates the three blobs;
    true in TEST, so the validation net uses the sums the training left). A copy: ``netdef``
    is unchanged."""
    batchnorm_setting(netdef, True)
    msg = netdef.msg.copy()
    for layer in msg.layer:
        if layer.type == "BatchNorm" and layer.has("batch_norm_param"):
            layer.batch_norm_param.clear("use_global_stats")
    return netdef_from_message(msg, netdef.path)


def reader_options(recipe: Recipe, dataset: str) -> dict[str, Any]:
    """What the recipe asks of the reader of ``dataset`` (one of its splits' datasets): its
    ``year``, where the reader chooses among year folders (``locate_options``); else nothing."""
    from reproduce.datasets import dataset_class  # the readers import torch; the recipes do not
    if recipe.year is None or "year" not in dataset_class(dataset).locate_options:
        return {}
    return {"year": recipe.year}


def with_overrides(recipe: Recipe, *, iter_size: int | None = None) -> Recipe:
    """The recipe with the command line's solver overrides."""
    if iter_size is None:
        return recipe
    if iter_size < 1:
        raise RecipeError(f"--iter-size must be at least 1, got {iter_size}")
    return replace(recipe, solver=replace(recipe.solver, iter_size=int(iter_size)))


def solver_parameter(recipe: Recipe) -> Any:
    """The recipe's settings as ``port.training.solver.SolverParameter``."""
    from port.training.solver import SolverParameter
    s = recipe.solver
    return SolverParameter(path=f"{recipe.upstream_dir}/solver.prototxt", base_lr=s.base_lr,
                           lr_policy=s.lr_policy, max_iter=s.max_iter, momentum=s.momentum,
                           weight_decay=s.weight_decay, iter_size=s.iter_size, type=s.type,
                           average_loss=s.average_loss, display=s.display, snapshot=s.snapshot,
                           test_iter=(s.test_iter,), test_interval=s.test_interval,
                           test_initialization=s.test_initialization)
