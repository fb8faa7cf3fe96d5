"""Class names of the released FCN models, in score-channel order.

Copied from the upstream release (shelhamer/fcn.berkeleyvision.org 1305c73, ``data/*/classes*.txt``)
into the package, so a model knows its classes without the upstream tree. Each constant cites
the file it was copied from; ``tests/test_models.py`` checks them against those files.
"""
from __future__ import annotations

#: data/pascal/classes.txt: background + the 20 PASCAL VOC classes, in score order.
VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)

#: data/pascal-context/classes-59.txt: background + the 59 most frequent PASCAL-Context classes.
PASCALCONTEXT_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor", "bag", "bed", "bench", "book", "building", "cabinet",
    "ceiling", "clothes", "computer", "cup", "door", "fence", "floor", "flower", "food",
    "grass", "ground", "keyboard", "light", "mountain", "mouse", "curtain", "platform", "sign",
    "plate", "road", "rock", "shelves", "sidewalk", "sky", "snow", "bedcloth", "track", "tree",
    "truck", "wall", "water", "window", "wood",
)

#: data/sift-flow/classes.txt, 'Semantic' 1-33 (score channel = label - 1).
SIFTFLOW_SEMANTIC_CLASSES = (
    "awning", "balcony", "bird", "boat", "bridge", "building", "bus", "car", "cow", "crosswalk",
    "desert", "door", "fence", "field", "grass", "moon", "mountain", "person", "plant", "pole",
    "river", "road", "rock", "sand", "sea", "sidewalk", "sign", "sky", "staircase",
    "streetlight", "sun", "tree", "window",
)

#: data/sift-flow/classes.txt, 'Geometric' 1-3 (score channel = label - 1).
SIFTFLOW_GEOMETRIC_CLASSES = (
    "sky", "horizontal", "vertical",
)

#: data/nyud/classes.txt: the 40 NYUDv2 classes of Gupta et al. (score channel = label - 1).
NYUD_CLASSES = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
    "picture", "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror",
    "floor mat", "clothes", "ceiling", "books", "refridgerator", "television", "paper", "towel",
    "shower curtain", "box", "whiteboard", "person", "night stand", "toilet", "sink", "lamp",
    "bathtub", "bag", "otherstructure", "otherfurniture", "otherprop",
)
