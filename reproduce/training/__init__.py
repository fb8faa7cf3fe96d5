"""Upstream FCN training (``python -m reproduce train``): each released net's recipe
(``recipes``), upstream's sample order under Python 2.7's ``random`` (``sampling``), the
training data layers (``data``) and the run itself (``run``)."""
