#include "plan.h"

#include <cstring>
#include <stdexcept>

namespace trt_double {

const char kPlanMagic[] = "MLMark TensorRT test double engine (not TensorRT)\n";

namespace {

const uint32_t kFormat = 1;
const uint64_t kMaxCount = 1u << 24;  // a count beyond this is a damaged file, not a model

class Writer {
 public:
  void u32(uint32_t v) { raw(&v, sizeof(v)); }
  void i32(int32_t v) { raw(&v, sizeof(v)); }
  void i64(int64_t v) { raw(&v, sizeof(v)); }
  void u64(uint64_t v) { raw(&v, sizeof(v)); }
  void str(const std::string& s) {
    u32(static_cast<uint32_t>(s.size()));
    out_.append(s);
  }
  void dims(const std::vector<int64_t>& d) {
    u32(static_cast<uint32_t>(d.size()));
    for (int64_t v : d) i64(v);
  }
  void tensor(const PlanTensor& t) {
    str(t.name);
    dims(t.dims);
    str(t.precision);
  }
  void raw(const void* p, std::size_t n) { out_.append(static_cast<const char*>(p), n); }
  std::string& out() { return out_; }

 private:
  std::string out_;
};

class Reader {
 public:
  Reader(const char* p, std::size_t n) : p_(p), end_(p + n) {}
  uint32_t u32() { return pod<uint32_t>(); }
  int32_t i32() { return pod<int32_t>(); }
  int64_t i64() { return pod<int64_t>(); }
  uint64_t u64() { return pod<uint64_t>(); }
  std::string str() {
    const uint32_t n = u32();
    need(n);
    std::string s(p_, n);
    p_ += n;
    return s;
  }
  std::vector<int64_t> dims() {
    std::vector<int64_t> d(count());
    for (int64_t& v : d) v = i64();
    return d;
  }
  PlanTensor tensor() {
    PlanTensor t;
    t.name = str();
    t.dims = dims();
    t.precision = str();
    return t;
  }
  std::size_t count() {
    const uint32_t n = u32();
    if (n > kMaxCount) throw std::runtime_error("a count of " + std::to_string(n));
    return n;
  }
  std::size_t left() const { return static_cast<std::size_t>(end_ - p_); }

 private:
  template <typename T>
  T pod() {
    need(sizeof(T));
    T v;
    std::memcpy(&v, p_, sizeof(T));
    p_ += sizeof(T);
    return v;
  }
  void need(std::size_t n) const {
    if (n > left()) throw std::runtime_error("it is truncated");
  }
  const char* p_;
  const char* end_;
};

}  // namespace

std::string serialize(const Plan& plan) {
  Writer w;
  w.raw(kPlanMagic, std::strlen(kPlanMagic));
  w.u32(kFormat);
  w.i32(plan.release);
  w.u32(plan.flags);
  w.i32(plan.verbosity);
  w.i32(plan.batch);
  w.i64(plan.kernel_ns);
  w.i64(plan.device_memory);
  w.u32(static_cast<uint32_t>(plan.io.size()));
  for (const PlanIO& io : plan.io) {
    w.str(io.name);
    w.u32(io.is_input ? 1 : 0);
    w.i32(io.dtype);
    w.dims(io.dims);
    w.dims(io.min);
    w.dims(io.opt);
    w.dims(io.max);
  }
  w.u32(static_cast<uint32_t>(plan.layers.size()));
  for (const PlanLayer& l : plan.layers) {
    w.str(l.name);
    w.str(l.layer_type);
    w.str(l.parameter_type);
    w.str(l.precision);
    w.u32(static_cast<uint32_t>(l.inputs.size()));
    for (const PlanTensor& t : l.inputs) w.tensor(t);
    w.u32(static_cast<uint32_t>(l.outputs.size()));
    for (const PlanTensor& t : l.outputs) w.tensor(t);
  }
  w.u64(plan.weight_bytes);
  std::string out = std::move(w.out());
  out.append(static_cast<std::size_t>(plan.weight_bytes), '\0');
  return out;
}

bool deserialize(const void* data, std::size_t size, Plan* plan, std::string* error) {
  const std::size_t magic = std::strlen(kPlanMagic);
  if (!data || size < magic || std::memcmp(data, kPlanMagic, magic) != 0) {
    *error = "the data is not an engine of the TensorRT test double";
    return false;
  }
  try {
    Reader r(static_cast<const char*>(data) + magic, size - magic);
    if (r.u32() != kFormat) throw std::runtime_error("it has another format version");
    Plan p;
    p.release = r.i32();
    p.flags = r.u32();
    p.verbosity = r.i32();
    p.batch = r.i32();
    p.kernel_ns = r.i64();
    p.device_memory = r.i64();
    p.io.resize(r.count());
    for (PlanIO& io : p.io) {
      io.name = r.str();
      io.is_input = r.u32() != 0;
      io.dtype = r.i32();
      io.dims = r.dims();
      io.min = r.dims();
      io.opt = r.dims();
      io.max = r.dims();
    }
    p.layers.resize(r.count());
    for (PlanLayer& l : p.layers) {
      l.name = r.str();
      l.layer_type = r.str();
      l.parameter_type = r.str();
      l.precision = r.str();
      l.inputs.resize(r.count());
      for (PlanTensor& t : l.inputs) t = r.tensor();
      l.outputs.resize(r.count());
      for (PlanTensor& t : l.outputs) t = r.tensor();
    }
    p.weight_bytes = r.u64();
    if (r.left() != p.weight_bytes) throw std::runtime_error("its size does not match (truncated or extended)");
    *plan = p;
    return true;
  } catch (const std::exception& e) {
    *error = std::string("the test double's engine is damaged: ") + e.what();
    return false;
  }
}

}  // namespace trt_double
