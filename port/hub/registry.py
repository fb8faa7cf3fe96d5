"""Typed records of the released files: the released caffemodels (the builders'
``weights="released"``, torch.hub, ``reproduce``), and what the reproduction needs besides:
dataset archives, split lists, the demo image and the ILSVRC classifiers; each with the URLs it
can be fetched from and its known digests.

The caffemodel URLs are those of the reference release, `<model>/caffemodel-url` in
shelhamer/fcn.berkeleyvision.org at commit 1305c73 (copies in `../shared/upstream/`); the dataset
URLs are those of its `data/*/README.md` files. Where no digest was published, the downloader
records a SHA-256 on the first verified download (`HashStore`) and checks it on every later one.

Everything a user can set lives here: the cache folder of downloads and converted weights
(argument, else `FCN_PORT_CACHE`, else `$XDG_CACHE_HOME/fcn-port`, else `~/.cache/fcn-port`: a
per-user cache as torch.hub's, never inside the installed package) and mirror base URLs
(argument, then `FCN_PORT_MIRRORS`), tried before the registry's own URLs.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import difflib
import fcntl
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from port.errors import PortError
from port.fileio import atomic_open
from port.models import get_meta, list_models
from port.models.meta import WAYBACK, Digests, ModelMeta
from port.models.cast_meta import CAST_MODELS

ENV_CACHE = "FCN_PORT_CACHE"
ENV_MIRRORS = "FCN_PORT_MIRRORS"
#: The cache's folder name under ``$XDG_CACHE_HOME`` (else ``~/.cache``).
CACHE_NAME = "fcn-port"
HASHES_FILENAME = "recorded-sha256.json"

# The reference release the caffemodel-url files, splits and demo files are taken from.
UPSTREAM_REPO = "shelhamer/fcn.berkeleyvision.org"
UPSTREAM_COMMIT = "1305c7378a9f0ab44b2c936f4d60e4687e3d8743"
CAFFE_DL = "http://dl.caffe.berkeleyvision.org/"
KINDS = ("caffemodel", "dataset", "split", "demo")


class UnknownArtifactError(PortError, LookupError):
    """A name that is no artifact (or builder) of the registry; the message suggests near names."""


class NoReleasedWeightsError(PortError, LookupError):
    """A model builder for which the reference release published no caffemodel."""


class HashStoreError(PortError):
    """The recorded-hashes file exists but is not what this module writes."""


@dataclasses.dataclass(frozen=True)
class Artifact:
    """One downloadable file: its registry name, file name, URLs in order of preference, the
    digests known for it (a file is good when it matches every digest of any one entry), and
    for a caffemodel the `port.models` builder it belongs to."""

    name: str
    kind: str
    filename: str
    urls: tuple[str, ...]
    known: tuple[Digests, ...] = ()
    builder: str | None = None
    description: str = ""
    source: str = ""
    #: For an evaluation split list: how many image ids it holds and the SHA-256 of those ids
    #: written one a line with a final newline (``split_digest``), so that a list with other
    #: line endings or spacing is still recognised, and a list of other ids is not.
    ids: int | None = None
    ids_sha256: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"artifact {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if not self.urls:
            raise ValueError(f"artifact {self.name!r}: needs at least one URL")
        if "/" in self.filename or self.filename in ("", ".", ".."):
            raise ValueError(f"artifact {self.name!r}: filename must be a plain file name, "
                             f"got {self.filename!r}")


def _wayback(url: str) -> str:
    return WAYBACK + url


def _caffemodel(meta: ModelMeta) -> Artifact:
    """The download record of a released net's caffemodel, from its ``ModelMeta`` (where the
    file name, addresses and published digests are kept)."""
    upstream_dir = meta.upstream_prototxt.split("/")[0]
    return Artifact(
        name=meta.caffemodel.removesuffix(".caffemodel"), kind="caffemodel", filename=meta.caffemodel,
        urls=meta.caffemodel_urls, known=meta.caffemodel_digests, builder=meta.name,
        description=f"released weights of {upstream_dir}",
        source=f"{UPSTREAM_REPO}@{UPSTREAM_COMMIT[:7]} {upstream_dir}/caffemodel-url")


def split_digest(ids: Sequence[str]) -> str:
    """The SHA-256 of a split's image ids, one a line, each line ending in a newline: what
    ``Artifact.ids_sha256`` records and what a run's report compares against it."""
    return hashlib.sha256("".join(f"{i}\n" for i in ids).encode("utf-8")).hexdigest()


def _upstream_file(name: str, kind: str, path: str, sha256: str, description: str,
                   ids: int | None = None, ids_sha256: str | None = None) -> Artifact:
    """A file of the reference repository at UPSTREAM_COMMIT; its SHA-256 is that of the copy
    in ../shared/upstream (tests/test_registry.py checks they agree, and the id counts and
    digests of the evaluation splits)."""
    urls = (
        f"https://raw.githubusercontent.com/{UPSTREAM_REPO}/{UPSTREAM_COMMIT}/{path}",
        f"https://github.com/{UPSTREAM_REPO}/raw/{UPSTREAM_COMMIT}/{path}",
        f"https://cdn.jsdelivr.net/gh/{UPSTREAM_REPO}@{UPSTREAM_COMMIT}/{path}",
    )
    return Artifact(name=name, kind=kind, filename=path.rsplit("/", 1)[-1], urls=urls,
                    known=(Digests(sha256=sha256, source=f"{UPSTREAM_REPO}@{UPSTREAM_COMMIT[:7]}"),),
                    description=description, source=f"{UPSTREAM_REPO}@{UPSTREAM_COMMIT[:7]} {path}",
                    ids=ids, ids_sha256=ids_sha256)


#: The released caffemodels, one per released net that has one (records in port.models).
CAFFEMODELS: tuple[Artifact, ...] = tuple(_caffemodel(get_meta(name)) for name in list_models()
                                          if get_meta(name).caffemodel)

# Builders of port.models whose net the reference release ships without weights.
UNRELEASED_BUILDERS = {
    "nyud_fcn32s_color_d": "upstream nyud-fcn32s-color-d has prototxts but no caffemodel-url",
}
#: The builders port.models.fcnize casts from an ILSVRC classifier: never released upstream.
CAST_BUILDERS = {
    "fcn_googlenet": "the paper's FCN-GoogLeNet was never released (upstream README FAQ: "
                     "'coming soon'); train it from classifier/bvlc-googlenet",
    **{name: "cast from an ILSVRC ResNet by fcnize, the project's own net; train it from its "
             "classifier caffemodel" for name in CAST_MODELS if name.startswith("fcn_resnet")},
}

_VOC = "http://host.robots.ox.ac.uk/pascal/VOC/"
_SBD = "Research/Projects/CS/vision/grouping/semantic_contours/benchmark.tgz"
_SIFTFLOW = "http://www.cs.unc.edu/~jtighe/Papers/ECCV10/siftflow/SiftFlowDataset.zip"
_CONTEXT = "cs.stanford.edu/~roozbeh/pascal-context/trainval.tar.gz"
_TORCHVISION_VOC = "torchvision datasets/voc.py DATASET_YEAR_DICT"

DATASETS: tuple[Artifact, ...] = (
    Artifact(
        "voc2012-trainval", "dataset", "VOCtrainval_11-May-2012.tar",
        (_VOC + "voc2012/VOCtrainval_11-May-2012.tar",
         "https://pjreddie.com/media/files/VOCtrainval_11-May-2012.tar",
         _wayback(_VOC + "voc2012/VOCtrainval_11-May-2012.tar")),
        (Digests(md5="6cd6e144f989b92b3379bac3b3de84fd", source=_TORCHVISION_VOC),),
        description="PASCAL VOC 2012 trainval (VOCdevkit/VOC2012; holds the seg11valid images)",
        source="data/pascal/README.md"),
    Artifact(
        "voc2011-trainval", "dataset", "VOCtrainval_25-May-2011.tar",
        (_VOC + "voc2011/VOCtrainval_25-May-2011.tar",
         _wayback(_VOC + "voc2011/VOCtrainval_25-May-2011.tar")),
        (Digests(md5="6c3384ef61512963050cb5d687e5bf1e", source=_TORCHVISION_VOC),),
        description="PASCAL VOC 2011 trainval (TrainVal/VOCdevkit/VOC2011)",
        source="data/pascal/README.md"),
    Artifact(
        "voc2010-trainval", "dataset", "VOCtrainval_03-May-2010.tar",
        (_VOC + "voc2010/VOCtrainval_03-May-2010.tar",
         _wayback(_VOC + "voc2010/VOCtrainval_03-May-2010.tar")),
        (Digests(md5="da459979d0c395079b5c75ee67908abb", source=_TORCHVISION_VOC),),
        description="PASCAL VOC 2010 trainval: the images PASCAL-Context labels",
        source="data/pascal-context/README.md (Context annotates VOC 2010)"),
    Artifact(
        "sbd", "dataset", "benchmark.tgz",
        ("http://www.eecs.berkeley.edu/" + _SBD, "https://www2.eecs.berkeley.edu/" + _SBD,
         _wayback("http://www.eecs.berkeley.edu/" + _SBD)),
        # Two byte sequences are published for this name: the gzip archive as served
        # (torchvision), and the plain tar a client gets when it undoes the server's
        # Content-Encoding: gzip (wkentaro/fcn, which renames it benchmark.tar). Our
        # downloader asks for identity encoding, so it should see the first.
        (Digests(md5="82b4d87ceb2ed10f6038a1cba92111cb", source="torchvision datasets/sbd.py"),
         Digests(md5="2b2af8a6cff7365684e002c08be823a6",
                 source="wkentaro/fcn datasets/voc.py SBDClassSeg (decoded tar)")),
        description="SBD benchmark_RELEASE/dataset: img/, cls/*.mat, train.txt, val.txt",
        source="data/pascal/README.md"),
    Artifact(
        "siftflow", "dataset", "SiftFlowDataset.zip", (_SIFTFLOW, _wayback(_SIFTFLOW)),
        description="SIFT Flow: Images/, SemanticLabels/, GeoLabels/",
        source="data/sift-flow/README.md"),
    Artifact(
        "nyud", "dataset", "nyud.tar.gz",
        (CAFFE_DL + "nyud.tar.gz", _wayback(CAFFE_DL + "nyud.tar.gz")),
        description="NYUDv2 in the authors' layout: data/images, data/depth, data/hha, "
                    "segmentation/*.mat (40-class task of Gupta et al.)",
        source="data/nyud/README.md"),
    Artifact(
        "pascal-context", "dataset", "trainval.tar.gz",
        ("https://cs.stanford.edu/~roozbeh/pascal-context/trainval.tar.gz",
         "https://www." + _CONTEXT, _wayback("http://www." + _CONTEXT)),
        description="PASCAL-Context annotations: trainval/<id>.mat with LabelMap (400 labels)",
        source="data/pascal-context/README.md (dataset site)"),
)

SPLITS: tuple[Artifact, ...] = (
    _upstream_file("split/pascal/seg11valid", "split", "data/pascal/seg11valid.txt",
                   "4ca991bd72c251fd2485eaa9e29536502ea3800d1b1c17c151fd6a04bcfbc2cc",
                   "the 736 VOC2011 val images not in SBD train", 736,
                   "4ca991bd72c251fd2485eaa9e29536502ea3800d1b1c17c151fd6a04bcfbc2cc"),
    _upstream_file("split/pascal/classes", "split", "data/pascal/classes.txt",
                   "7337a2b06728385fb3e1106416c67bfddf69628598b1f2f0db6a63cd63fb6b1e",
                   "PASCAL VOC classes in model output order"),
    _upstream_file("split/sift-flow/test", "split", "data/sift-flow/test.txt",
                   "d9d024d06b1ed2139b0e1bdbc78ede9897c3389cd588cd5c37268a931c1d36ae",
                   "SIFT Flow test split (200 images)", 200,
                   "866d9c2a8c8e27de69651f8a2938a3851165559345a5deb162e031af215f78be"),
    _upstream_file("split/sift-flow/trainval", "split", "data/sift-flow/trainval.txt",
                   "4321de2b164556875661a66c64e6b5ebe1493a6e3dfa51d93700e3d17dbedfe7",
                   "SIFT Flow trainval split"),
    _upstream_file("split/sift-flow/classes", "split", "data/sift-flow/classes.txt",
                   "9e9c657a9acbb1d87eb505c3baa74809e5460247e297ac814cf6f0717c8da01f",
                   "SIFT Flow semantic and geometric classes"),
    _upstream_file("split/nyud/test", "split", "data/nyud/test.txt",
                   "f717536bdff71424f6f7cd0674cf6ac4381b2cffaaf942230b962a9f40671e7a",
                   "NYUDv2 test split (654 images)", 654,
                   "656d092d45f280de393c7beab6185f6d8bbbec2f01c5b2becd478cfd5505ec74"),
    _upstream_file("split/nyud/train", "split", "data/nyud/train.txt",
                   "8db94b4a9b33494c20319c6e79073aa7b842a683e6d263c3873d6ee95cebf759",
                   "NYUDv2 train split"),
    _upstream_file("split/nyud/val", "split", "data/nyud/val.txt",
                   "cd278b1232fe5c2347994a9a3c13cd916aa2e72def51b9698993a2e8936797f5",
                   "NYUDv2 val split"),
    _upstream_file("split/nyud/classes", "split", "data/nyud/classes.txt",
                   "70c98794343c2996e43a8ee696dfc2d209789ff0d65420f4565ed9dd36c088aa",
                   "NYUDv2 40 classes in model output order"),
    _upstream_file("split/pascal-context/classes-59", "split", "data/pascal-context/classes-59.txt",
                   "0a570a766be2aff841a7e9b2cb7f0ce8157bfa13ec4778276e352c7518132ed0",
                   "PASCAL-Context 59-class task"),
    _upstream_file("split/pascal-context/classes-400", "split",
                   "data/pascal-context/classes-400.txt",
                   "5d1672fb298b429f37561402b297b98706f72713bb9a69650fe0961f8faf0fe1",
                   "PASCAL-Context full label list"),
)

DEMO: tuple[Artifact, ...] = (
    _upstream_file("demo/image", "demo", "demo/image.jpg",
                   "657b36fed1ea84a44fde2ad641d52726947e9ff23652836273730f7b1ee0d7d8",
                   "the demo input, VOC 2007_000129"),
    _upstream_file("demo/output", "demo", "demo/output.png",
                   "954592a652351795e2176a9a3cb4c709fc0a3ec2fda76aa1fd6863df221e6a85",
                   "the released FCN-8s prediction on the demo image (upstream infer.py)"),
    _upstream_file("demo/label", "demo", "demo/label.png",
                   "baa7290b79283e4b4812436587af4585d5810da38752b4dfedf7b0ac910d6568",
                   "the demo image's ground truth"),
)

#: BVLC/caffe's model zoo (``models/<dir>/readme.md`` @ 9b89154, front matter ``caffemodel_url``
#: and ``sha1``; the same sha1s in opencv_extra ``testdata/dnn/download_models.py`` @ 00a935f and
#: apache/mxnet ``tools/caffe_converter/convert_caffe_modelzoo.py`` @ 1100eca). CaffeNet, FCN-AlexNet's
#: trunk, is written out below; bvlc_alexnet is the AlexNet of the paper's footnote's comparison.
_BVLC_CLASSIFIERS = (
    ("bvlc-googlenet", "bvlc_googlenet", "405fc5acd08a3bb12de8ee5e23a96bec22f08204",
     "BVLC GoogLeNet (ILSVRC 2014, 68.7% top-1 centre crop per its readme): FCN-GoogLeNet's trunk"),
    ("bvlc-alexnet", "bvlc_alexnet", "9116a64c0fbe4459d18f4bb6b56d647b63920377",
     "BVLC AlexNet (57.1% top-1 per its readme)"),
)
#: KaimingHe/deep-residual-networks (README @ a7026cb: a OneDrive folder, no digests, no direct
#: file URL). The digests and the direct mirror are apache/mxnet's
#: ``tools/caffe_converter/convert_caffe_modelzoo.py`` @ 1100eca1e98f97809b7a5c4c611d23cc06a4d99c
#: (ResNet-50's sha1 also in opencv_extra ``download_models.py`` @ 00a935f, whose mirror
#: dl.opencv.org serves ResNet-50 only); data.mxnet.io is MXNet's older address of the same files.
_MXNET_RESNET = "https://apache-mxnet.s3-accelerate.dualstack.amazonaws.com/caffe/models/resnet/"
_MXNET_OLD = "http://data.mxnet.io/models/imagenet/test/caffe/"
_RESNET_CLASSIFIERS = (
    (50, "b7c79ccc21ad0479cddc0dd78b1d20c4d722908d",
     ("https://dl.opencv.org/models/ResNet-50-model.caffemodel",)),
    (101, "1dbf5f493926bb9b6b3363b12d5133c0f8b78904", ()),
    (152, "251edb93604ac8268c7fd2227a0f15144310e1aa", ()),
)


def _bvlc(name: str, folder: str, sha1: str, description: str) -> Artifact:
    url = f"{CAFFE_DL}{folder}.caffemodel"
    return Artifact(f"classifier/{name}", "caffemodel", f"{folder}.caffemodel", (url, _wayback(url)),
                    (Digests(sha1=sha1, source=f"BVLC/caffe models/{folder}/readme.md (sha1)"),),
                    description=description,
                    source=f"BVLC/caffe@9b89154 models/{folder}/readme.md caffemodel_url")


def _resnet(depth: int, sha1: str, more: tuple[str, ...]) -> Artifact:
    filename = f"ResNet-{depth}-model.caffemodel"
    return Artifact(f"classifier/resnet-{depth}", "caffemodel", filename,
                    (_MXNET_RESNET + filename, *more, _MXNET_OLD + filename),
                    (Digests(sha1=sha1, source="apache/mxnet@1100eca tools/caffe_converter/"
                                               "convert_caffe_modelzoo.py (sha1)"),),
                    description=f"MSRA ResNet-{depth} (ILSVRC 2015, Caffe BatchNorm + Scale): the "
                                f"trunk of fcn_resnet{depth}_*",
                    source="KaimingHe/deep-residual-networks@a7026cb README 'Model files' (OneDrive "
                           "folder, no digest); file URL and sha1: apache/mxnet@1100eca")


#: The ILSVRC classifiers upstream FCN training starts from (upstream ``ilsvrc-nets/README.md``:
#: VGG16 from the authors' gist 211839e770f7b538e2d8, CaffeNet from BVLC/caffe
#: ``models/bvlc_reference_caffenet``); ``reproduce train --init auto`` transplants them.
#: VGG16's publishers give no digest: its SHA-256 is recorded on the first verified download.
_VGG16_URL = "http://www.robots.ox.ac.uk/~vgg/software/very_deep/caffe/VGG_ILSVRC_16_layers.caffemodel"
CLASSIFIERS: tuple[Artifact, ...] = (
    Artifact(
        "classifier/vgg16-ilsvrc-2014", "caffemodel", "VGG_ILSVRC_16_layers.caffemodel",
        (_VGG16_URL, "https://www.robots.ox.ac.uk/~vgg/software/very_deep/caffe/"
                     "VGG_ILSVRC_16_layers.caffemodel", _wayback(_VGG16_URL)),
        description="VGG16 (ILSVRC 2014, legacy V1 layers, ~528 MB): the trunk of every VGG FCN",
        source="gist ksimonyan/211839e770f7b538e2d8 readme.md caffemodel_url "
               "(upstream ilsvrc-nets/README.md)"),
    Artifact(
        "classifier/bvlc-reference-caffenet", "caffemodel", "bvlc_reference_caffenet.caffemodel",
        (CAFFE_DL + "bvlc_reference_caffenet.caffemodel",
         _wayback(CAFFE_DL + "bvlc_reference_caffenet.caffemodel")),
        (Digests(sha1="4c8d77deb20ea792f84eb5e6d0a11ca0a8660a46",
                 source="BVLC/caffe models/bvlc_reference_caffenet/readme.md (sha1)"),),
        description="CaffeNet (BVLC reference AlexNet variant, ~233 MB): FCN-AlexNet's trunk",
        source="BVLC/caffe models/bvlc_reference_caffenet/readme.md caffemodel_url "
               "(upstream ilsvrc-nets/README.md)"),
    *(_bvlc(*row) for row in _BVLC_CLASSIFIERS),
    *(_resnet(*row) for row in _RESNET_CLASSIFIERS),
)

ARTIFACTS: tuple[Artifact, ...] = CAFFEMODELS + DATASETS + SPLITS + DEMO + CLASSIFIERS


def _index(artifacts: Sequence[Artifact], field: str) -> dict[str, Artifact]:
    """field value -> artifact, refusing a value two artifacts share."""
    index: dict[str, Artifact] = {}
    for artifact in artifacts:
        key = getattr(artifact, field)
        if key in index:
            raise ValueError(f"registry: two artifacts with {field} {key!r}")
        index[key] = artifact
    return index


_BY_NAME = _index(ARTIFACTS, "name")
_BY_BUILDER = _index(CAFFEMODELS, "builder")
# File names shared by several artifacts (classes.txt, test.txt) are no lookup key.
_FILENAME_USES = collections.Counter(a.filename for a in ARTIFACTS)
_BY_FILENAME = {a.filename: a for a in ARTIFACTS if _FILENAME_USES[a.filename] == 1}


def names(kind: str | None = None) -> list[str]:
    """Registry names, all or of one kind."""
    return [a.name for a in ARTIFACTS if kind is None or a.kind == kind]


def _unknown(what: str, key: str, choices: Sequence[str]) -> UnknownArtifactError:
    near = difflib.get_close_matches(key, choices, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(map(repr, near))}?" if near else ""
    return UnknownArtifactError(f"unknown {what} {key!r}{hint} (known: {', '.join(choices)})")


def get(name: str) -> Artifact:
    """The artifact with this registry name, file name, or (for a caffemodel) builder name."""
    for index in (_BY_NAME, _BY_FILENAME, _BY_BUILDER):
        if name in index:
            return index[name]
    if name in UNRELEASED_BUILDERS or name in CAST_BUILDERS:
        return caffemodel_for(name)
    raise _unknown("artifact", name, sorted({*_BY_NAME, *_BY_FILENAME, *_BY_BUILDER}))


def caffemodel_for(builder: str) -> Artifact:
    """The released caffemodel of a `port.models` builder."""
    if builder in _BY_BUILDER:
        return _BY_BUILDER[builder]
    unreleased = {**UNRELEASED_BUILDERS, **CAST_BUILDERS}
    if builder in unreleased:
        raise NoReleasedWeightsError(
            f"model {builder!r} has no released caffemodel ({unreleased[builder]}); "
            f"train it or pass a local caffemodel")
    raise _unknown("model builder", builder, sorted([*_BY_BUILDER, *unreleased]))


def user_cache_dir() -> Path:
    """The per-user cache: ``$FCN_PORT_CACHE``, else ``$XDG_CACHE_HOME/fcn-port``, else
    ``~/.cache/fcn-port`` (the XDG base directory rule, as torch.hub's ``$TORCH_HOME``)."""
    env = os.environ.get(ENV_CACHE, "").strip()
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    base = Path(xdg).expanduser() if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / CACHE_NAME


def cache_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """The download and conversion cache: the argument (``--cache``), else the per-user cache
    (``user_cache_dir``)."""
    return Path(override) if override is not None else user_cache_dir()


def user_mirrors(mirrors: Sequence[str] | None = None) -> tuple[str, ...]:
    """Mirror base URLs set by the user: the argument's first, then $FCN_PORT_MIRRORS
    (separated by whitespace or commas)."""
    from_env = re.split(r"[\s,]+", os.environ.get(ENV_MIRRORS, "").strip())
    ordered = [*(mirrors or ()), *from_env]
    return tuple(dict.fromkeys(m.strip() for m in ordered if m.strip()))


def mirrored_urls(filename: str, urls: Sequence[str],
                  mirrors: Sequence[str] | None = None) -> tuple[str, ...]:
    """URLs to try in order: each user mirror base (:func:`user_mirrors`) + ``filename``, then
    ``urls``, each once. The one mirror rule: a registry artifact's and a bare URL's."""
    from_mirrors = [m.rstrip("/") + "/" + filename for m in user_mirrors(mirrors)]
    return tuple(dict.fromkeys([*from_mirrors, *urls]))


def candidate_urls(artifact: Artifact, mirrors: Sequence[str] | None = None) -> tuple[str, ...]:
    """URLs to try in order: each user mirror base + file name, then the registry's URLs."""
    return mirrored_urls(artifact.filename, artifact.urls, mirrors)


@contextlib.contextmanager
def file_lock(path: Path, on_wait: Callable[[Path], None] | None = None, *,
              remove_on_error: bool = False) -> Iterator[None]:
    """An exclusive fcntl.flock on `path` (created if missing) for the duration. `on_wait(path)`
    is called once when another holder makes us wait.

    With `remove_on_error`, a body that raises removes the lock file (while still holding it),
    so a failed download leaves nothing behind. That is safe because a lock is only held once
    the path still names the very file locked: a process that waited on a file removed meanwhile
    opens the path again (the classic check of fstat against stat)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    waited = False
    while True:
        handle = open(path, "a+b")
        try:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if on_wait is not None and not waited:
                    on_wait(path)
                waited = True
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            if _same_file(handle, path):
                break
        except BaseException:
            handle.close()
            raise
        handle.close()   # removed by its last holder while we waited: lock the new one
    with handle:
        try:
            yield
        except BaseException:
            if remove_on_error:
                path.unlink(missing_ok=True)
            raise
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _same_file(handle: Any, path: Path) -> bool:
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(handle.fileno())
    return (held.st_dev, held.st_ino) == (named.st_dev, named.st_ino)


class HashStore:
    """SHA-256 digests recorded on the first verified download of each artifact (or URL),
    kept in a small JSON file in the cache folder, so every later download is checked."""

    VERSION = 1

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else cache_dir() / HASHES_FILENAME

    def _read(self) -> dict[str, dict]:
        if not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise HashStoreError(f"{self.path}: not a recorded-hashes JSON file ({err}); "
                                 f"delete it to start afresh") from err
        if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
            raise HashStoreError(f"{self.path}: expected an object with a 'files' object")
        return data["files"]

    def get(self, key: str) -> Mapping[str, object] | None:
        """The record of `key` ({'sha256', 'size', 'url', ...}), or None."""
        record = self._read().get(key)
        if record is not None and not re.fullmatch("[0-9a-f]{64}", str(record.get("sha256"))):
            raise HashStoreError(f"{self.path}: record {key!r} has no valid 'sha256'")
        return record

    def record(self, key: str, **fields: object) -> None:
        """Add or replace the record of `key`; read-modify-write under a lock, written atomically."""
        with file_lock(self.path.with_name(self.path.name + ".lock")):
            files = self._read()
            files[key] = dict(fields)
            payload = json.dumps({"version": self.VERSION, "files": files}, indent=1, sort_keys=True)
            with atomic_open(self.path) as handle:  # the lock above made its folder
                handle.write(payload.encode("utf-8") + b"\n")
