"""Released weights in one call: the records of every released file (``registry``: addresses,
mirrors, digests, the per-user cache), the one streaming downloader (``download``), and a
released net's caffemodel fetched, verified and converted once into the cache.

Torch-free: fetching and converting import no torch (``port convert`` and ``reproduce`` share
these modules; ``port`` never imports ``reproduce``).
"""
