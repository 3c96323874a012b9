// What the test double's ONNX parser reads of a model: the graph's inputs, outputs, nodes and initializers.
//
// A protobuf wire-format reader of the few ModelProto fields needed, written here rather than linking
// protobuf and onnx.proto: the double must build wherever the tests run (no protobuf compiler, no ONNX C++
// library), and it needs names, types, shapes, node operators and connections only, never weights' values.
#ifndef TRT_DOUBLE_ONNX_READER_H
#define TRT_DOUBLE_ONNX_READER_H

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace trt_double {

// ONNX TensorProto.DataType numbers used here.
enum OnnxType : int32_t {
  kOnnxFloat = 1,
  kOnnxUint8 = 2,
  kOnnxInt8 = 3,
  kOnnxInt32 = 6,
  kOnnxInt64 = 7,
  kOnnxBool = 9,
  kOnnxFloat16 = 10,
  kOnnxDouble = 11,
  kOnnxBfloat16 = 16,
};

struct OnnxValue {
  std::string name;
  int32_t elem_type = 0;
  bool has_shape = false;
  std::vector<int64_t> dims;  // -1 for a symbolic or unknown dimension
};

struct OnnxNode {
  std::string name;
  std::string op_type;
  std::string domain;
  std::vector<std::string> inputs;  // "" for an omitted optional input
  std::vector<std::string> outputs;
  int64_t to = -1;  // Cast's target type
};

struct OnnxInitializer {
  std::string name;
  int32_t elem_type = 0;
  std::vector<int64_t> dims;
  int64_t count = 1;
};

struct OnnxModel {
  int64_t ir_version = 0;
  std::map<std::string, int64_t> opsets;  // domain ("" for the default) -> version
  std::vector<OnnxValue> inputs;           // as the graph lists them, initializers included in old models
  std::vector<OnnxValue> outputs;
  std::vector<OnnxValue> value_info;
  std::vector<OnnxNode> nodes;
  std::vector<OnnxInitializer> initializers;
};

// Parses a serialized ModelProto; false with *error saying what is wrong.
bool read_onnx(const std::string& bytes, OnnxModel* model, std::string* error);

}  // namespace trt_double

#endif  // TRT_DOUBLE_ONNX_READER_H
