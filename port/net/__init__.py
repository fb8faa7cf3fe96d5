"""The net engine: each Caffe layer semantic (``ops``), crop geometry (``coord_map``), the layers and the executor that runs a parsed net."""
