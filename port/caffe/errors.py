"""The one error type every Caffe file reader raises."""
from __future__ import annotations

import os

from port.errors import PortError


class CaffeFormatError(PortError):
    """A Caffe file (prototxt, caffemodel, .h5) that does not read as Caffe would read it.

    ``path`` is the file, ``where`` is ``"line:col"`` for text or ``"byte N"`` for binary,
    ``field`` names the message field (or layer/blob) concerned, ``message`` says what was
    expected. ``str()`` reads ``"{path}: {where}: {field}: {message}"``.
    """

    def __init__(self, path: str | os.PathLike | None, where: str, field: str, message: str):
        self.path = str(path) if path is not None else "<bytes>"
        self.where = where
        self.field = field
        self.message = message
        super().__init__(f"{self.path}: {where}: {field}: {message}")

    def __reduce__(self):
        # keep the four parts when pickled across processes (pytest-xdist, multiprocessing)
        return (type(self), (self.path, self.where, self.field, self.message))
