"""fcn-port: the Caffe FCN reference models, ported to PyTorch blob for blob.

The package is a pipeline, one folder a stage: ``port.caffe`` reads and writes Caffe's file
formats; ``port.weights`` reads, writes and checks weights files (caffemodel, HDF5,
safetensors); ``port.net`` holds each layer semantic (``ops``), the crop geometry (``coord_map``) and
the engine that runs a parsed net; ``port.models`` the released FCN family; ``port.run`` devices,
speed and precision modes; ``port.convert`` caffemodels to safetensors; ``port.hub`` the
released files' records, the downloader and released weights converted once into the per-user
cache (``fcn8s(weights="released")``, ``hubconf.py``); ``port.training`` surgery and Caffe's
solver; ``port.cli`` the ``python -m port`` commands.
"""
__version__ = "0.1.0"
