#include "onnx_reader.h"

#include <stdexcept>

namespace trt_double {
namespace {

// Protobuf wire types.
const int kVarint = 0;
const int kFixed64 = 1;
const int kLengthDelimited = 2;
const int kFixed32 = 5;

// A view of one message's bytes; each next() yields one field.
class Reader {
 public:
  Reader(const char* data, std::size_t size) : p_(reinterpret_cast<const unsigned char*>(data)), end_(p_ + size) {}

  bool next(uint32_t* field, int* wire) {
    if (p_ >= end_) return false;
    const uint64_t key = varint();
    *field = static_cast<uint32_t>(key >> 3);
    *wire = static_cast<int>(key & 7);
    if (*field == 0) throw std::runtime_error("a field number 0");
    return true;
  }

  uint64_t varint() {
    uint64_t value = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (p_ >= end_) throw std::runtime_error("a varint runs past the end");
      const unsigned char b = *p_++;
      value |= static_cast<uint64_t>(b & 0x7f) << shift;
      if (!(b & 0x80)) return value;
    }
    throw std::runtime_error("a varint longer than 10 bytes");
  }

  std::string bytes() {
    const uint64_t n = varint();
    if (n > static_cast<uint64_t>(end_ - p_)) throw std::runtime_error("a length-delimited field runs past the end");
    std::string s(reinterpret_cast<const char*>(p_), static_cast<std::size_t>(n));
    p_ += n;
    return s;
  }

  void skip(int wire) {
    switch (wire) {
      case kVarint:
        varint();
        return;
      case kFixed64:
        advance(8);
        return;
      case kLengthDelimited:
        advance(static_cast<std::size_t>(varint()));
        return;
      case kFixed32:
        advance(4);
        return;
      default:
        throw std::runtime_error("an unknown wire type " + std::to_string(wire));
    }
  }

  // A repeated int64: packed (one length-delimited run) or one varint per field.
  void int64s(int wire, std::vector<int64_t>* out) {
    if (wire == kVarint) {
      out->push_back(static_cast<int64_t>(varint()));
      return;
    }
    if (wire != kLengthDelimited) throw std::runtime_error("a repeated int64 of wire type " + std::to_string(wire));
    const std::string packed = bytes();
    Reader inner(packed.data(), packed.size());
    while (!inner.done()) out->push_back(static_cast<int64_t>(inner.varint()));
  }

  bool done() const { return p_ >= end_; }

 private:
  void advance(std::size_t n) {
    if (n > static_cast<std::size_t>(end_ - p_)) throw std::runtime_error("a field runs past the end");
    p_ += n;
  }

  const unsigned char* p_;
  const unsigned char* end_;
};

void expect(int wire, int wanted, const char* what) {
  if (wire != wanted) throw std::runtime_error(std::string(what) + " has wire type " + std::to_string(wire));
}

// TypeProto.Tensor { elem_type = 1; shape = 2 { dim = 1 { dim_value = 1; dim_param = 2 } } }
void read_tensor_type(const std::string& msg, OnnxValue* v) {
  Reader r(msg.data(), msg.size());
  uint32_t f;
  int w;
  while (r.next(&f, &w)) {
    if (f == 1 && w == kVarint) {
      v->elem_type = static_cast<int32_t>(r.varint());
    } else if (f == 2 && w == kLengthDelimited) {
      v->has_shape = true;
      const std::string shape = r.bytes();
      Reader s(shape.data(), shape.size());
      uint32_t sf;
      int sw;
      while (s.next(&sf, &sw)) {
        if (sf != 1) {
          s.skip(sw);
          continue;
        }
        expect(sw, kLengthDelimited, "TensorShapeProto.dim");
        const std::string dim = s.bytes();
        Reader d(dim.data(), dim.size());
        int64_t value = -1;
        uint32_t df;
        int dw;
        while (d.next(&df, &dw)) {
          if (df == 1 && dw == kVarint) {
            value = static_cast<int64_t>(d.varint());
          } else {
            d.skip(dw);  // dim_param, denotation: symbolic, so -1
          }
        }
        v->dims.push_back(value);
      }
    } else {
      r.skip(w);
    }
  }
}

// ValueInfoProto { name = 1; type = 2 { tensor_type = 1 } }
OnnxValue read_value_info(const std::string& msg) {
  OnnxValue v;
  Reader r(msg.data(), msg.size());
  uint32_t f;
  int w;
  while (r.next(&f, &w)) {
    if (f == 1 && w == kLengthDelimited) {
      v.name = r.bytes();
    } else if (f == 2 && w == kLengthDelimited) {
      const std::string type = r.bytes();
      Reader t(type.data(), type.size());
      uint32_t tf;
      int tw;
      while (t.next(&tf, &tw)) {
        if (tf == 1 && tw == kLengthDelimited) {
          read_tensor_type(t.bytes(), &v);
        } else {
          t.skip(tw);
        }
      }
    } else {
      r.skip(w);
    }
  }
  return v;
}

// NodeProto { input = 1; output = 2; name = 3; op_type = 4; attribute = 5 { name = 1; i = 3 }; domain = 7 }
OnnxNode read_node(const std::string& msg) {
  OnnxNode n;
  Reader r(msg.data(), msg.size());
  uint32_t f;
  int w;
  while (r.next(&f, &w)) {
    if (w != kLengthDelimited || f < 1 || f > 7 || f == 6) {
      r.skip(w);
      continue;
    }
    const std::string value = r.bytes();
    if (f == 1) n.inputs.push_back(value);
    if (f == 2) n.outputs.push_back(value);
    if (f == 3) n.name = value;
    if (f == 4) n.op_type = value;
    if (f == 7) n.domain = value;
    if (f == 5) {
      Reader a(value.data(), value.size());
      std::string name;
      int64_t i = -1;
      uint32_t af;
      int aw;
      while (a.next(&af, &aw)) {
        if (af == 1 && aw == kLengthDelimited) {
          name = a.bytes();
        } else if (af == 3 && aw == kVarint) {
          i = static_cast<int64_t>(a.varint());
        } else {
          a.skip(aw);
        }
      }
      if (name == "to") n.to = i;
    }
  }
  return n;
}

// TensorProto { dims = 1; data_type = 2; name = 8 }
OnnxInitializer read_initializer(const std::string& msg) {
  OnnxInitializer t;
  Reader r(msg.data(), msg.size());
  uint32_t f;
  int w;
  while (r.next(&f, &w)) {
    if (f == 1) {
      r.int64s(w, &t.dims);
    } else if (f == 2 && w == kVarint) {
      t.elem_type = static_cast<int32_t>(r.varint());
    } else if (f == 8 && w == kLengthDelimited) {
      t.name = r.bytes();
    } else {
      r.skip(w);
    }
  }
  for (int64_t d : t.dims) t.count *= d;
  return t;
}

// GraphProto { node = 1; initializer = 5; input = 11; output = 12; value_info = 13 }
void read_graph(const std::string& msg, OnnxModel* m) {
  Reader r(msg.data(), msg.size());
  uint32_t f;
  int w;
  while (r.next(&f, &w)) {
    if (w != kLengthDelimited || (f != 1 && f != 5 && f != 11 && f != 12 && f != 13)) {
      r.skip(w);
      continue;
    }
    const std::string value = r.bytes();
    if (f == 1) m->nodes.push_back(read_node(value));
    if (f == 5) m->initializers.push_back(read_initializer(value));
    if (f == 11) m->inputs.push_back(read_value_info(value));
    if (f == 12) m->outputs.push_back(read_value_info(value));
    if (f == 13) m->value_info.push_back(read_value_info(value));
  }
}

}  // namespace

bool read_onnx(const std::string& bytes, OnnxModel* model, std::string* error) {
  try {
    *model = OnnxModel();
    bool graph = false;
    Reader r(bytes.data(), bytes.size());
    uint32_t f;
    int w;
    // ModelProto { ir_version = 1; graph = 7; opset_import = 8 { domain = 1; version = 2 } }
    while (r.next(&f, &w)) {
      if (f == 1 && w == kVarint) {
        model->ir_version = static_cast<int64_t>(r.varint());
      } else if (f == 7 && w == kLengthDelimited) {
        read_graph(r.bytes(), model);
        graph = true;
      } else if (f == 8 && w == kLengthDelimited) {
        const std::string opset = r.bytes();
        Reader o(opset.data(), opset.size());
        std::string domain;
        int64_t version = 0;
        uint32_t of;
        int ow;
        while (o.next(&of, &ow)) {
          if (of == 1 && ow == kLengthDelimited) {
            domain = o.bytes();
          } else if (of == 2 && ow == kVarint) {
            version = static_cast<int64_t>(o.varint());
          } else {
            o.skip(ow);
          }
        }
        model->opsets[domain == "ai.onnx" ? "" : domain] = version;
      } else {
        r.skip(w);
      }
    }
    if (!graph || model->ir_version <= 0) {
      *error = "not an ONNX model (no graph or no IR version)";
      return false;
    }
    return true;
  } catch (const std::exception& e) {
    *error = std::string("not a valid ONNX model: ") + e.what();
    return false;
  }
}

}  // namespace trt_double
