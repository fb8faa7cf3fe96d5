"""Training as Caffe trains: surgery (transplant, interp, fillers) and Caffe's SGD solver."""
