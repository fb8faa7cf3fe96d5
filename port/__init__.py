"""fcn-port: the Caffe FCN reference models, ported to PyTorch blob for blob.

Subpackages: ``port.caffe`` reads Caffe's file formats; ``port.ops`` holds each Caffe layer
semantic; ``port.graph`` builds a module from any parsed net; ``port.models`` holds the
released FCN family; ``port.convert`` turns caffemodels into safetensors.
"""
__version__ = "0.1.0"
