"""The subset of Caffe's ``caffe.proto`` the readers and the writer need.

The message definitions below are copied from BVLC/caffe ``src/caffe/proto/caffe.proto``
(master; field numbers, labels, ``packed`` and ``default`` options unchanged, comments
dropped, messages of unrelated layers left out) and parsed once at import into
:class:`MessageType` records. Keeping the definitions in proto syntax lets anyone check each
field number against caffe.proto line by line. ``PoolingParameter.round_mode`` (13),
``clip_param`` (148) and ``swish_param`` (147) are the later BVLC master additions.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field as dc_field

SCALAR_KINDS = frozenset(
    {"int32", "int64", "uint32", "uint64", "sint32", "sint64", "bool", "float", "double",
     "string", "bytes", "fixed32", "fixed64", "sfixed32", "sfixed64"})
# protobuf wire types (encoding.html): 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32
WIRE_VARINT, WIRE_FIXED64, WIRE_LEN, WIRE_FIXED32 = 0, 1, 2, 5
_WIRE_OF_KIND = {"float": WIRE_FIXED32, "fixed32": WIRE_FIXED32, "sfixed32": WIRE_FIXED32,
                 "double": WIRE_FIXED64, "fixed64": WIRE_FIXED64, "sfixed64": WIRE_FIXED64,
                 "string": WIRE_LEN, "bytes": WIRE_LEN, "message": WIRE_LEN}
# value ranges of the integer kinds, used by the text parser's range check
INT_RANGES = {"int32": (-2**31, 2**31 - 1), "sint32": (-2**31, 2**31 - 1),
              "sfixed32": (-2**31, 2**31 - 1), "uint32": (0, 2**32 - 1), "fixed32": (0, 2**32 - 1),
              "int64": (-2**63, 2**63 - 1), "sint64": (-2**63, 2**63 - 1),
              "sfixed64": (-2**63, 2**63 - 1), "uint64": (0, 2**64 - 1), "fixed64": (0, 2**64 - 1)}
# Blob payloads are held as numpy arrays (zero-copy views of the file where packed).
ARRAY_FIELDS = frozenset({("BlobProto", "data"), ("BlobProto", "diff"),
                          ("BlobProto", "double_data"), ("BlobProto", "double_diff")})

CAFFE_PROTO = r"""
message BlobShape { repeated int64 dim = 1 [packed = true]; }
message BlobProto {
  optional BlobShape shape = 7;
  repeated float data = 5 [packed = true];
  repeated float diff = 6 [packed = true];
  repeated double double_data = 8 [packed = true];
  repeated double double_diff = 9 [packed = true];
  optional int32 num = 1 [default = 0];
  optional int32 channels = 2 [default = 0];
  optional int32 height = 3 [default = 0];
  optional int32 width = 4 [default = 0];
}
message BlobProtoVector { repeated BlobProto blobs = 1; }
message FillerParameter {
  optional string type = 1 [default = 'constant'];
  optional float value = 2 [default = 0];
  optional float min = 3 [default = 0];
  optional float max = 4 [default = 1];
  optional float mean = 5 [default = 0];
  optional float std = 6 [default = 1];
  optional int32 sparse = 7 [default = -1];
  enum VarianceNorm { FAN_IN = 0; FAN_OUT = 1; AVERAGE = 2; }
  optional VarianceNorm variance_norm = 8 [default = FAN_IN];
}
message NetParameter {
  optional string name = 1;
  repeated string input = 3;
  repeated BlobShape input_shape = 8;
  repeated int32 input_dim = 4;
  optional bool force_backward = 5 [default = false];
  optional NetState state = 6;
  optional bool debug_info = 7 [default = false];
  repeated LayerParameter layer = 100;
  repeated V1LayerParameter layers = 2;
}
message SolverParameter {
  optional string net = 24;
  optional NetParameter net_param = 25;
  optional string train_net = 1;
  repeated string test_net = 2;
  optional NetParameter train_net_param = 21;
  repeated NetParameter test_net_param = 22;
  optional NetState train_state = 26;
  repeated NetState test_state = 27;
  repeated int32 test_iter = 3;
  optional int32 test_interval = 4 [default = 0];
  optional bool test_compute_loss = 19 [default = false];
  optional bool test_initialization = 32 [default = true];
  optional float base_lr = 5;
  optional int32 display = 6;
  optional int32 average_loss = 33 [default = 1];
  optional int32 max_iter = 7;
  optional int32 iter_size = 36 [default = 1];
  optional string lr_policy = 8;
  optional float gamma = 9;
  optional float power = 10;
  optional float momentum = 11;
  optional float weight_decay = 12;
  optional string regularization_type = 29 [default = "L2"];
  optional int32 stepsize = 13;
  repeated int32 stepvalue = 34;
  optional float clip_gradients = 35 [default = -1];
  optional int32 snapshot = 14 [default = 0];
  optional string snapshot_prefix = 15;
  optional bool snapshot_diff = 16 [default = false];
  enum SnapshotFormat { HDF5 = 0; BINARYPROTO = 1; }
  optional SnapshotFormat snapshot_format = 37 [default = BINARYPROTO];
  enum SolverMode { CPU = 0; GPU = 1; }
  optional SolverMode solver_mode = 17 [default = GPU];
  optional int32 device_id = 18 [default = 0];
  optional int64 random_seed = 20 [default = -1];
  optional string type = 40 [default = "SGD"];
  optional float delta = 31 [default = 1e-8];
  optional float momentum2 = 39 [default = 0.999];
  optional float rms_decay = 38 [default = 0.99];
  optional bool debug_info = 23 [default = false];
  optional bool snapshot_after_train = 28 [default = true];
  enum SolverType { SGD = 0; NESTEROV = 1; ADAGRAD = 2; RMSPROP = 3; ADADELTA = 4; ADAM = 5; }
  optional SolverType solver_type = 30 [default = SGD];
  optional bool layer_wise_reduce = 41 [default = true];
  repeated string weights = 42;
}
enum Phase { TRAIN = 0; TEST = 1; }
message NetState {
  optional Phase phase = 1 [default = TEST];
  optional int32 level = 2 [default = 0];
  repeated string stage = 3;
}
message NetStateRule {
  optional Phase phase = 1;
  optional int32 min_level = 2;
  optional int32 max_level = 3;
  repeated string stage = 4;
  repeated string not_stage = 5;
}
message ParamSpec {
  optional string name = 1;
  optional DimCheckMode share_mode = 2;
  enum DimCheckMode { STRICT = 0; PERMISSIVE = 1; }
  optional float lr_mult = 3 [default = 1.0];
  optional float decay_mult = 4 [default = 1.0];
}
message LayerParameter {
  optional string name = 1;
  optional string type = 2;
  repeated string bottom = 3;
  repeated string top = 4;
  optional Phase phase = 10;
  repeated float loss_weight = 5;
  repeated ParamSpec param = 6;
  repeated BlobProto blobs = 7;
  repeated bool propagate_down = 11;
  repeated NetStateRule include = 8;
  repeated NetStateRule exclude = 9;
  optional TransformationParameter transform_param = 100;
  optional LossParameter loss_param = 101;
  optional AccuracyParameter accuracy_param = 102;
  optional ArgMaxParameter argmax_param = 103;
  optional BatchNormParameter batch_norm_param = 139;
  optional BiasParameter bias_param = 141;
  optional ClipParameter clip_param = 148;
  optional ConcatParameter concat_param = 104;
  optional ContrastiveLossParameter contrastive_loss_param = 105;
  optional ConvolutionParameter convolution_param = 106;
  optional CropParameter crop_param = 144;
  optional DataParameter data_param = 107;
  optional DropoutParameter dropout_param = 108;
  optional DummyDataParameter dummy_data_param = 109;
  optional EltwiseParameter eltwise_param = 110;
  optional ELUParameter elu_param = 140;
  optional EmbedParameter embed_param = 137;
  optional ExpParameter exp_param = 111;
  optional FlattenParameter flatten_param = 135;
  optional HDF5DataParameter hdf5_data_param = 112;
  optional HDF5OutputParameter hdf5_output_param = 113;
  optional HingeLossParameter hinge_loss_param = 114;
  optional ImageDataParameter image_data_param = 115;
  optional InfogainLossParameter infogain_loss_param = 116;
  optional InnerProductParameter inner_product_param = 117;
  optional InputParameter input_param = 143;
  optional LogParameter log_param = 134;
  optional LRNParameter lrn_param = 118;
  optional MemoryDataParameter memory_data_param = 119;
  optional MVNParameter mvn_param = 120;
  optional ParameterParameter parameter_param = 145;
  optional PoolingParameter pooling_param = 121;
  optional PowerParameter power_param = 122;
  optional PReLUParameter prelu_param = 131;
  optional PythonParameter python_param = 130;
  optional RecurrentParameter recurrent_param = 146;
  optional ReductionParameter reduction_param = 136;
  optional ReLUParameter relu_param = 123;
  optional ReshapeParameter reshape_param = 133;
  optional ScaleParameter scale_param = 142;
  optional SigmoidParameter sigmoid_param = 124;
  optional SoftmaxParameter softmax_param = 125;
  optional SPPParameter spp_param = 132;
  optional SliceParameter slice_param = 126;
  optional SwishParameter swish_param = 147;
  optional TanHParameter tanh_param = 127;
  optional ThresholdParameter threshold_param = 128;
  optional TileParameter tile_param = 138;
  optional WindowDataParameter window_data_param = 129;
}
message TransformationParameter {
  optional float scale = 1 [default = 1];
  optional bool mirror = 2 [default = false];
  optional uint32 crop_size = 3 [default = 0];
  optional string mean_file = 4;
  repeated float mean_value = 5;
  optional bool force_color = 6 [default = false];
  optional bool force_gray = 7 [default = false];
}
message LossParameter {
  optional int32 ignore_label = 1;
  enum NormalizationMode { FULL = 0; VALID = 1; BATCH_SIZE = 2; NONE = 3; }
  optional NormalizationMode normalization = 3 [default = VALID];
  optional bool normalize = 2;
}
message AccuracyParameter {
  optional uint32 top_k = 1 [default = 1];
  optional int32 axis = 2 [default = 1];
  optional int32 ignore_label = 3;
}
message ArgMaxParameter {
  optional bool out_max_val = 1 [default = false];
  optional uint32 top_k = 2 [default = 1];
  optional int32 axis = 3;
}
message ClipParameter { optional float min = 1; optional float max = 2; }
message ConcatParameter {
  optional int32 axis = 2 [default = 1];
  optional uint32 concat_dim = 1 [default = 1];
}
message BatchNormParameter {
  optional bool use_global_stats = 1;
  optional float moving_average_fraction = 2 [default = .999];
  optional float eps = 3 [default = 1e-5];
}
message BiasParameter {
  optional int32 axis = 1 [default = 1];
  optional int32 num_axes = 2 [default = 1];
  optional FillerParameter filler = 3;
}
message ContrastiveLossParameter {
  optional float margin = 1 [default = 1.0];
  optional bool legacy_version = 2 [default = false];
}
message ConvolutionParameter {
  optional uint32 num_output = 1;
  optional bool bias_term = 2 [default = true];
  repeated uint32 pad = 3;
  repeated uint32 kernel_size = 4;
  repeated uint32 stride = 6;
  repeated uint32 dilation = 18;
  optional uint32 pad_h = 9 [default = 0];
  optional uint32 pad_w = 10 [default = 0];
  optional uint32 kernel_h = 11;
  optional uint32 kernel_w = 12;
  optional uint32 stride_h = 13;
  optional uint32 stride_w = 14;
  optional uint32 group = 5 [default = 1];
  optional FillerParameter weight_filler = 7;
  optional FillerParameter bias_filler = 8;
  enum Engine { DEFAULT = 0; CAFFE = 1; CUDNN = 2; }
  optional Engine engine = 15 [default = DEFAULT];
  optional int32 axis = 16 [default = 1];
  optional bool force_nd_im2col = 17 [default = false];
}
message CropParameter {
  optional int32 axis = 1 [default = 2];
  repeated uint32 offset = 2;
}
message DataParameter {
  enum DB { LEVELDB = 0; LMDB = 1; }
  optional string source = 1;
  optional uint32 batch_size = 4;
  optional uint32 rand_skip = 7 [default = 0];
  optional DB backend = 8 [default = LEVELDB];
  optional float scale = 2 [default = 1];
  optional string mean_file = 3;
  optional uint32 crop_size = 5 [default = 0];
  optional bool mirror = 6 [default = false];
  optional bool force_encoded_color = 9 [default = false];
  optional uint32 prefetch = 10 [default = 4];
}
message DropoutParameter { optional float dropout_ratio = 1 [default = 0.5]; }
message DummyDataParameter {
  repeated FillerParameter data_filler = 1;
  repeated BlobShape shape = 6;
  repeated uint32 num = 2;
  repeated uint32 channels = 3;
  repeated uint32 height = 4;
  repeated uint32 width = 5;
}
message EltwiseParameter {
  enum EltwiseOp { PROD = 0; SUM = 1; MAX = 2; }
  optional EltwiseOp operation = 1 [default = SUM];
  repeated float coeff = 2;
  optional bool stable_prod_grad = 3 [default = true];
}
message ELUParameter { optional float alpha = 1 [default = 1]; }
message EmbedParameter {
  optional uint32 num_output = 1;
  optional uint32 input_dim = 2;
  optional bool bias_term = 3 [default = true];
  optional FillerParameter weight_filler = 4;
  optional FillerParameter bias_filler = 5;
}
message ExpParameter {
  optional float base = 1 [default = -1.0];
  optional float scale = 2 [default = 1.0];
  optional float shift = 3 [default = 0.0];
}
message FlattenParameter {
  optional int32 axis = 1 [default = 1];
  optional int32 end_axis = 2 [default = -1];
}
message HDF5DataParameter {
  optional string source = 1;
  optional uint32 batch_size = 2;
  optional bool shuffle = 3 [default = false];
}
message HDF5OutputParameter { optional string file_name = 1; }
message HingeLossParameter {
  enum Norm { L1 = 1; L2 = 2; }
  optional Norm norm = 1 [default = L1];
}
message ImageDataParameter {
  optional string source = 1;
  optional uint32 batch_size = 4 [default = 1];
  optional uint32 rand_skip = 7 [default = 0];
  optional bool shuffle = 8 [default = false];
  optional uint32 new_height = 9 [default = 0];
  optional uint32 new_width = 10 [default = 0];
  optional bool is_color = 11 [default = true];
  optional float scale = 2 [default = 1];
  optional string mean_file = 3;
  optional uint32 crop_size = 5 [default = 0];
  optional bool mirror = 6 [default = false];
  optional string root_folder = 12 [default = ""];
}
message InfogainLossParameter { optional string source = 1; optional int32 axis = 2 [default = 1]; }
message InnerProductParameter {
  optional uint32 num_output = 1;
  optional bool bias_term = 2 [default = true];
  optional FillerParameter weight_filler = 3;
  optional FillerParameter bias_filler = 4;
  optional int32 axis = 5 [default = 1];
  optional bool transpose = 6 [default = false];
}
message InputParameter { repeated BlobShape shape = 1; }
message LogParameter {
  optional float base = 1 [default = -1.0];
  optional float scale = 2 [default = 1.0];
  optional float shift = 3 [default = 0.0];
}
message LRNParameter {
  optional uint32 local_size = 1 [default = 5];
  optional float alpha = 2 [default = 1.];
  optional float beta = 3 [default = 0.75];
  enum NormRegion { ACROSS_CHANNELS = 0; WITHIN_CHANNEL = 1; }
  optional NormRegion norm_region = 4 [default = ACROSS_CHANNELS];
  optional float k = 5 [default = 1.];
  enum Engine { DEFAULT = 0; CAFFE = 1; CUDNN = 2; }
  optional Engine engine = 6 [default = DEFAULT];
}
message MemoryDataParameter {
  optional uint32 batch_size = 1;
  optional uint32 channels = 2;
  optional uint32 height = 3;
  optional uint32 width = 4;
}
message MVNParameter {
  optional bool normalize_variance = 1 [default = true];
  optional bool across_channels = 2 [default = false];
  optional float eps = 3 [default = 1e-9];
}
message ParameterParameter { optional BlobShape shape = 1; }
message PoolingParameter {
  enum PoolMethod { MAX = 0; AVE = 1; STOCHASTIC = 2; }
  optional PoolMethod pool = 1 [default = MAX];
  optional uint32 pad = 4 [default = 0];
  optional uint32 pad_h = 9 [default = 0];
  optional uint32 pad_w = 10 [default = 0];
  optional uint32 kernel_size = 2;
  optional uint32 kernel_h = 5;
  optional uint32 kernel_w = 6;
  optional uint32 stride = 3 [default = 1];
  optional uint32 stride_h = 7;
  optional uint32 stride_w = 8;
  enum Engine { DEFAULT = 0; CAFFE = 1; CUDNN = 2; }
  optional Engine engine = 11 [default = DEFAULT];
  optional bool global_pooling = 12 [default = false];
  enum RoundMode { CEIL = 0; FLOOR = 1; }
  optional RoundMode round_mode = 13 [default = CEIL];
}
message PowerParameter {
  optional float power = 1 [default = 1.0];
  optional float scale = 2 [default = 1.0];
  optional float shift = 3 [default = 0.0];
}
message PythonParameter {
  optional string module = 1;
  optional string layer = 2;
  optional string param_str = 3 [default = ''];
  optional bool share_in_parallel = 4 [default = false];
}
message RecurrentParameter {
  optional uint32 num_output = 1 [default = 0];
  optional FillerParameter weight_filler = 2;
  optional FillerParameter bias_filler = 3;
  optional bool debug_info = 4 [default = false];
  optional bool expose_hidden = 5 [default = false];
}
message ReductionParameter {
  enum ReductionOp { SUM = 1; ASUM = 2; SUMSQ = 3; MEAN = 4; }
  optional ReductionOp operation = 1 [default = SUM];
  optional int32 axis = 2 [default = 0];
  optional float coeff = 3 [default = 1.0];
}
message ReLUParameter {
  optional float negative_slope = 1 [default = 0];
  enum Engine { DEFAULT = 0; CAFFE = 1; CUDNN = 2; }
  optional Engine engine = 2 [default = DEFAULT];
}
message ReshapeParameter {
  optional BlobShape shape = 1;
  optional int32 axis = 2 [default = 0];
  optional int32 num_axes = 3 [default = -1];
}
message ScaleParameter {
  optional int32 axis = 1 [default = 1];
  optional int32 num_axes = 2 [default = 1];
  optional FillerParameter filler = 3;
  optional bool bias_term = 4 [default = false];
  optional FillerParameter bias_filler = 5;
}
message SigmoidParameter {
  enum Engine { DEFAULT = 0; CAFFE = 1; CUDNN = 2; }
  optional Engine engine = 1 [default = DEFAULT];
}
message SliceParameter {
  optional int32 axis = 3 [default = 1];
  repeated uint32 slice_point = 2;
  optional uint32 slice_dim = 1 [default = 1];
}
message SoftmaxParameter {
  enum Engine { DEFAULT = 0; CAFFE = 1; CUDNN = 2; }
  optional Engine engine = 1 [default = DEFAULT];
  optional int32 axis = 2 [default = 1];
}
message SwishParameter { optional float beta = 1 [default = 1]; }
message TanHParameter {
  enum Engine { DEFAULT = 0; CAFFE = 1; CUDNN = 2; }
  optional Engine engine = 1 [default = DEFAULT];
}
message TileParameter {
  optional int32 axis = 1 [default = 1];
  optional int32 tiles = 2;
}
message ThresholdParameter { optional float threshold = 1 [default = 0]; }
message WindowDataParameter {
  optional string source = 1;
  optional float scale = 2 [default = 1];
  optional string mean_file = 3;
  optional uint32 batch_size = 4;
  optional uint32 crop_size = 5 [default = 0];
  optional bool mirror = 6 [default = false];
  optional float fg_threshold = 7 [default = 0.5];
  optional float bg_threshold = 8 [default = 0.5];
  optional float fg_fraction = 9 [default = 0.25];
  optional uint32 context_pad = 10 [default = 0];
  optional string crop_mode = 11 [default = "warp"];
  optional bool cache_images = 12 [default = false];
  optional string root_folder = 13 [default = ""];
}
message SPPParameter {
  enum PoolMethod { MAX = 0; AVE = 1; STOCHASTIC = 2; }
  optional uint32 pyramid_height = 1;
  optional PoolMethod pool = 2 [default = MAX];
  enum Engine { DEFAULT = 0; CAFFE = 1; CUDNN = 2; }
  optional Engine engine = 6 [default = DEFAULT];
}
message PReLUParameter {
  optional FillerParameter filler = 1;
  optional bool channel_shared = 2 [default = false];
}
message V1LayerParameter {
  repeated string bottom = 2;
  repeated string top = 3;
  optional string name = 4;
  repeated NetStateRule include = 32;
  repeated NetStateRule exclude = 33;
  enum LayerType {
    NONE = 0; ABSVAL = 35; ACCURACY = 1; ARGMAX = 30; BNLL = 2; CONCAT = 3;
    CONTRASTIVE_LOSS = 37; CONVOLUTION = 4; DATA = 5; DECONVOLUTION = 39; DROPOUT = 6;
    DUMMY_DATA = 32; EUCLIDEAN_LOSS = 7; ELTWISE = 25; EXP = 38; FLATTEN = 8; HDF5_DATA = 9;
    HDF5_OUTPUT = 10; HINGE_LOSS = 28; IM2COL = 11; IMAGE_DATA = 12; INFOGAIN_LOSS = 13;
    INNER_PRODUCT = 14; LRN = 15; MEMORY_DATA = 29; MULTINOMIAL_LOGISTIC_LOSS = 16; MVN = 34;
    POOLING = 17; POWER = 26; RELU = 18; SIGMOID = 19; SIGMOID_CROSS_ENTROPY_LOSS = 27;
    SILENCE = 36; SOFTMAX = 20; SOFTMAX_LOSS = 21; SPLIT = 22; SLICE = 33; TANH = 23;
    WINDOW_DATA = 24; THRESHOLD = 31;
  }
  optional LayerType type = 5;
  repeated BlobProto blobs = 6;
  repeated string param = 1001;
  repeated DimCheckMode blob_share_mode = 1002;
  enum DimCheckMode { STRICT = 0; PERMISSIVE = 1; }
  repeated float blobs_lr = 7;
  repeated float weight_decay = 8;
  repeated float loss_weight = 35;
  optional AccuracyParameter accuracy_param = 27;
  optional ArgMaxParameter argmax_param = 23;
  optional ConcatParameter concat_param = 9;
  optional ContrastiveLossParameter contrastive_loss_param = 40;
  optional ConvolutionParameter convolution_param = 10;
  optional DataParameter data_param = 11;
  optional DropoutParameter dropout_param = 12;
  optional DummyDataParameter dummy_data_param = 26;
  optional EltwiseParameter eltwise_param = 24;
  optional ExpParameter exp_param = 41;
  optional HDF5DataParameter hdf5_data_param = 13;
  optional HDF5OutputParameter hdf5_output_param = 14;
  optional HingeLossParameter hinge_loss_param = 29;
  optional ImageDataParameter image_data_param = 15;
  optional InfogainLossParameter infogain_loss_param = 16;
  optional InnerProductParameter inner_product_param = 17;
  optional LRNParameter lrn_param = 18;
  optional MemoryDataParameter memory_data_param = 22;
  optional MVNParameter mvn_param = 34;
  optional PoolingParameter pooling_param = 19;
  optional PowerParameter power_param = 21;
  optional ReLUParameter relu_param = 30;
  optional SigmoidParameter sigmoid_param = 38;
  optional SoftmaxParameter softmax_param = 39;
  optional SliceParameter slice_param = 31;
  optional TanHParameter tanh_param = 37;
  optional ThresholdParameter threshold_param = 25;
  optional WindowDataParameter window_data_param = 20;
  optional TransformationParameter transform_param = 36;
  optional LossParameter loss_param = 42;
}
"""


@dataclass(frozen=True)
class Field:
    """One field of a message: its number, name, kind and proto2 options."""
    number: int
    name: str
    kind: str                 # a scalar kind, "enum" or "message"
    repeated: bool = False
    packed: bool = False
    default: object = None    # proto2 default (already converted), None for kind default
    type_name: str | None = None  # the enum's or the message's name
    array: bool = False       # held as a numpy array (blob payloads)

    @property
    def wire_type(self) -> int:
        """The wire type of one element (a packed field is WIRE_LEN on the wire)."""
        return _WIRE_OF_KIND.get(self.kind, WIRE_VARINT)


@dataclass
class MessageType:
    """A message of caffe.proto: its fields by name and by number."""
    name: str
    fields: list[Field] = dc_field(default_factory=list)
    by_name: dict[str, Field] = dc_field(default_factory=dict)
    by_number: dict[int, Field] = dc_field(default_factory=dict)


@dataclass(frozen=True)
class EnumType:
    """An enum of caffe.proto: value names to numbers and back."""
    name: str
    values: dict[str, int]

    @property
    def names(self) -> dict[int, str]:
        # aliasing is not used in caffe.proto, so the inverse is a function
        return {v: k for k, v in self.values.items()}


_TOKEN = re.compile(r"\s*(?:(//[^\n]*)|([A-Za-z_][\w.]*)|([-+]?[\d.]+(?:[eE][-+]?\d+)?)"
                    r"|('[^']*'|\"[^\"]*\")|([{}\[\]=;,]))")


def _tokens(text: str) -> list[str]:
    out, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise SyntaxError(f"caffe.proto subset: cannot read at {text[pos:pos + 20]!r}")
        pos = m.end()
        if not m.group(1):
            out.append(m.group(0).strip())
    return out


class _ProtoParser:
    """Reads the proto2 subset above: messages, enums (nested or top level), fields."""

    def __init__(self, text: str):
        self.toks = _tokens(text)
        self.i = 0
        self.messages: dict[str, MessageType] = {}
        self.enums: dict[str, EnumType] = {}
        self.raw_fields: list[tuple[MessageType, tuple]] = []

    def next(self) -> str:
        self.i += 1
        return self.toks[self.i - 1]

    def parse(self) -> None:
        while self.i < len(self.toks):
            if self.next() == "message":
                self.message()
            else:
                self.enum("")

    def enum(self, scope: str) -> None:
        name, values = self.next(), {}
        self.next()  # {
        while (tok := self.next()) != "}":
            self.next()  # =
            values[tok] = int(self.next())
            self.next()  # ;
        self.enums[scope + name] = EnumType(scope + name, values)

    def message(self) -> None:
        mt = MessageType(self.next())
        self.messages[mt.name] = mt
        self.next()  # {
        while (tok := self.next()) != "}":
            if tok == "enum":
                self.enum(mt.name + ".")
                continue
            kind, name, _, number = self.next(), self.next(), self.next(), int(self.next())
            options = {}
            if (tok2 := self.next()) == "[":
                while tok2 != "]":
                    key, _, value, tok2 = self.next(), self.next(), self.next(), self.next()
                    options[key] = value
                self.next()  # ;
            self.raw_fields.append((mt, (tok, kind, name, number, options)))


def _default(kind: str, literal: str | None, enum: EnumType | None):
    if literal is None:
        return None
    if enum is not None:
        return literal
    if kind == "bool":
        return literal == "true"
    if kind in ("float", "double"):
        return float(literal)
    if kind in ("string", "bytes"):
        return literal[1:-1]
    return int(literal)


def _resolve(parser: _ProtoParser) -> None:
    for mt, (label, kind, name, number, options) in parser.raw_fields:
        enum = parser.enums.get(f"{mt.name}.{kind}") or parser.enums.get(kind)
        if kind in SCALAR_KINDS:
            fkind, tname = kind, None
        elif enum is not None:
            fkind, tname = "enum", enum.name
        elif kind in parser.messages:
            fkind, tname = "message", kind
        else:
            raise SyntaxError(f"caffe.proto subset: {mt.name}.{name}: unknown type {kind}")
        f = Field(number, name, fkind, label == "repeated", options.get("packed") == "true",
                  _default(kind, options.get("default"), enum), tname,
                  (mt.name, name) in ARRAY_FIELDS)
        mt.fields.append(f)
        mt.by_name[name] = f
        mt.by_number[number] = f


def _build() -> tuple[dict[str, MessageType], dict[str, EnumType]]:
    parser = _ProtoParser(CAFFE_PROTO)
    parser.parse()
    _resolve(parser)
    return parser.messages, parser.enums


MESSAGES, ENUMS = _build()


def message_type(name: str) -> MessageType:
    """The schema of message ``name`` (e.g. ``"NetParameter"``); KeyError if not in the subset."""
    return MESSAGES[name]
