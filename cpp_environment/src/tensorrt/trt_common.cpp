#include "tensorrt/trt_common.h"

#include <dlfcn.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <type_traits>
#include <utility>

#include "log.h"
#include "mlmark/executor.h"
#include "tensorrt/trt_compat.h"

namespace mlmark {
namespace trt {
namespace {

// TensorRT may log from its own threads during a build, so the active capture sits behind a mutex.
std::mutex g_capture_mutex;
ErrorCapture* g_capture = nullptr;
std::string g_last_error;  // under g_capture_mutex
// Smaller than any engine TensorRT writes (a header alone is larger): such a file is truncated.
const std::size_t kMinEngineBytes = 64;

bool contains_nocase(const std::string& text, const char* needle) {
  std::string a = text, b = needle;
  for (char& c : a) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  for (char& c : b) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return a.find(b) != std::string::npos;
}

std::string errno_text() { return std::strerror(errno); }

}  // namespace

void Logger::log(Severity severity, nvinfer1::AsciiChar const* message) noexcept {
  try {
    const std::string text = message ? message : "";
    if (severity == Severity::kERROR || severity == Severity::kINTERNAL_ERROR) {
      bool captured = false;
      {
        std::lock_guard<std::mutex> lock(g_capture_mutex);
        g_last_error = text;
        if (g_capture) {
          g_capture->add(text);
          captured = true;
        }
      }
      // Logged outside the lock: the log callback may wait for Python's GIL.
      mlmark::log(captured ? MLMARK_LOG_DEBUG : MLMARK_LOG_ERROR, "TensorRT%s: %s", captured ? " error" : "",
                  text.c_str());
    } else if (severity == Severity::kWARNING) {
      mlmark::log(MLMARK_LOG_WARNING, "TensorRT: %s", text.c_str());
    } else if (log_enabled(MLMARK_LOG_DEBUG)) {
      mlmark::log(MLMARK_LOG_DEBUG, "TensorRT: %s", text.c_str());
    }
  } catch (...) {
    // A logger must not throw into TensorRT; a message lost to a failed allocation is acceptable.
  }
}

std::string Logger::last_error() const {
  std::lock_guard<std::mutex> lock(g_capture_mutex);
  return g_last_error;
}

Logger& logger() {
  static Logger instance;
  return instance;
}

ErrorCapture::ErrorCapture() {
  std::lock_guard<std::mutex> lock(g_capture_mutex);
  outer_ = g_capture;
  g_capture = this;
}

ErrorCapture::~ErrorCapture() {
  std::lock_guard<std::mutex> lock(g_capture_mutex);
  g_capture = outer_;
}

void ErrorCapture::add(const std::string& message) { errors_.push_back(message); }

std::vector<std::string> ErrorCapture::errors() const {
  std::lock_guard<std::mutex> lock(g_capture_mutex);
  return errors_;
}

std::string ErrorCapture::summary(const std::string& fallback, std::size_t max_messages) const {
  const std::vector<std::string> all = errors();
  if (all.empty()) return fallback;
  std::string out;
  for (std::size_t i = 0; i < all.size() && i < max_messages; ++i) {
    if (!out.empty()) out += "; ";
    out += all[i];
  }
  if (all.size() > max_messages) out += "; (" + std::to_string(all.size() - max_messages) + " more)";
  return out;
}

bool ErrorCapture::out_of_memory() const {
  // TensorRT prefixes its errors with "Error Code <n>:", n being nvinfer1::ErrorCode; 5 is kFAILED_ALLOCATION.
  static const char* const kPatterns[] = {"Error Code 5:",      "out of memory",     "could not be allocated",
                                          "cudaErrorMemoryAllocation", "bad_alloc", "OutOfMemory",
                                          "insufficient memory", "failed to allocate"};
  for (const std::string& e : errors()) {
    for (const char* p : kPatterns) {
      if (contains_nocase(e, p)) return true;
    }
  }
  return false;
}

bool linked_against_test_double() {
  // Looked up in the library that provides TensorRT's entry points, whatever its name; asked once.
  static const bool found = [] {
    Dl_info where;
    std::memset(&where, 0, sizeof(where));
    if (dladdr(reinterpret_cast<void*>(&createInferRuntime_INTERNAL), &where) == 0 || !where.dli_fname) return false;
    void* handle = dlopen(where.dli_fname, RTLD_LAZY | RTLD_NOLOAD);
    if (!handle) return false;
    const bool marker = dlsym(handle, "mlmark_tensorrt_test_double") != nullptr;
    dlclose(handle);
    return marker;
  }();
  return found;
}

std::string runtime_label() {
  return (linked_against_test_double() ? "the TensorRT test double for " : "TensorRT ") + compat::runtime_version();
}

std::shared_ptr<Engine> load_engine(const std::string& path) {
  std::shared_ptr<Engine> e(new Engine());
  e->path = path;
  if (!file_exists(path)) throw Error(MLMARK_ERR_MODEL, "the engine file " + path + " does not exist");
  const std::string data = read_file(path, "engine file");
  e->file_bytes = data.size();
  if (data.size() < kMinEngineBytes) {
    throw Error(MLMARK_ERR_MODEL, "the engine file " + path + " has " + std::to_string(data.size()) +
                                      " bytes: it is truncated; delete it so that it is built again");
  }
  ErrorCapture errors;
  e->runtime.reset(nvinfer1::createInferRuntime(logger()));
  if (!e->runtime) throw Error(MLMARK_ERR_TENSORRT, "creating the TensorRT runtime failed: " + errors.summary("no detail"));
  e->engine.reset(e->runtime->deserializeCudaEngine(data.data(), data.size()));
  if (!e->engine) {
    throw Error(MLMARK_ERR_MODEL, runtime_label() + " cannot load the engine " + path +
                                      " (" + errors.summary("no detail", 2) +
                                      "): it is damaged, or was built by another TensorRT release or for another GPU; "
                                      "delete it so that it is built again");
  }
  return e;
}

bool file_exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string read_file(const std::string& path, const char* what) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) throw Error(MLMARK_ERR_MODEL, std::string("cannot open the ") + what + " " + path + ": " + errno_text());
  std::string data;
  char chunk[1 << 16];
  std::size_t n;
  while ((n = std::fread(chunk, 1, sizeof(chunk), f)) > 0) data.append(chunk, n);
  const bool failed = std::ferror(f) != 0;
  std::fclose(f);
  if (failed) throw Error(MLMARK_ERR_MODEL, std::string("cannot read the ") + what + " " + path);
  return data;
}

void write_file(const std::string& path, const void* data, std::size_t size, const char* what) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) throw Error(MLMARK_ERR_INVALID_ARGUMENT, std::string("cannot create the ") + what + " " + path + ": " + errno_text());
  bool ok = std::fwrite(data, 1, size, f) == size;
  ok = std::fflush(f) == 0 && ok;
  // The data must be on disk before the caller renames the file into place: a power cut on a board
  // must not leave a complete-looking but empty engine.
  ok = ::fsync(fileno(f)) == 0 && ok;
  const std::string reason = ok ? "" : errno_text();
  ok = std::fclose(f) == 0 && ok;
  if (!ok) {
    std::remove(path.c_str());
    throw Error(MLMARK_ERR_INVALID_ARGUMENT, std::string("writing the ") + what + " " + path + " failed: " + reason);
  }
}

void write_file_atomic(const std::string& path, const void* data, std::size_t size, const char* what) {
  const std::string temp = path + ".tmp." + std::to_string(static_cast<long>(::getpid()));
  write_file(temp, data, size, what);
  if (std::rename(temp.c_str(), path.c_str()) != 0) {
    const std::string reason = errno_text();
    std::remove(temp.c_str());
    throw Error(MLMARK_ERR_INVALID_ARGUMENT, std::string("replacing the ") + what + " " + path + " failed: " + reason);
  }
}

std::vector<int64_t> to_vector(const nvinfer1::Dims& dims) {
  std::vector<int64_t> out;
  for (int32_t i = 0; i < dims.nbDims && i < nvinfer1::Dims::MAX_DIMS; ++i) out.push_back(static_cast<int64_t>(dims.d[i]));
  return out;
}

nvinfer1::Dims to_dims(const std::vector<int64_t>& shape) {
  using Element = std::remove_reference<decltype(std::declval<nvinfer1::Dims>().d[0])>::type;
  if (shape.size() > static_cast<std::size_t>(nvinfer1::Dims::MAX_DIMS)) {
    throw Error(MLMARK_ERR_INVALID_ARGUMENT, "a shape of rank " + std::to_string(shape.size()) + " is beyond TensorRT's limit");
  }
  nvinfer1::Dims dims;
  dims.nbDims = static_cast<int32_t>(shape.size());
  for (int32_t i = 0; i < nvinfer1::Dims::MAX_DIMS; ++i) {
    dims.d[i] = i < dims.nbDims ? static_cast<Element>(shape[static_cast<std::size_t>(i)]) : Element(0);
  }
  return dims;
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ",";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

int dtype_bits(int dtype) {
  switch (dtype) {
    case MLMARK_DTYPE_FLOAT32:
    case MLMARK_DTYPE_INT32:
      return 32;
    case MLMARK_DTYPE_FLOAT16:
    case MLMARK_DTYPE_BFLOAT16:
      return 16;
    case MLMARK_DTYPE_INT8:
    case MLMARK_DTYPE_BOOL:
    case MLMARK_DTYPE_UINT8:
    case MLMARK_DTYPE_FP8:
    case MLMARK_DTYPE_E8M0:
      return 8;
    case MLMARK_DTYPE_INT64:
      return 64;
    case MLMARK_DTYPE_INT4:
    case MLMARK_DTYPE_FP4:
      return 4;
    default:
      return 0;
  }
}

std::size_t tensor_bytes(const std::vector<int64_t>& shape, int dtype, const std::string& name) {
  const int bits = dtype_bits(dtype);
  if (bits == 0) {
    throw Error(MLMARK_ERR_UNSUPPORTED, "tensor '" + name + "' has an element type (" + std::to_string(dtype) +
                                            ") this library does not know");
  }
  uint64_t count = 1;
  for (int64_t d : shape) {
    if (d < 0) {
      throw Error(MLMARK_ERR_UNSUPPORTED, "tensor '" + name + "' has a dynamic shape " + shape_string(shape) +
                                              " that the engine does not fix");
    }
    count *= static_cast<uint64_t>(d);
  }
  return static_cast<std::size_t>((count * static_cast<uint64_t>(bits) + 7) / 8);
}

}  // namespace trt
}  // namespace mlmark
