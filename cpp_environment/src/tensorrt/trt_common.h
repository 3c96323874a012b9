// What the TensorRT sources share: ownership of TensorRT objects, the process's ILogger, capture of
// TensorRT's error messages for the one-line errors the C ABI returns, files, shapes and element types.
#ifndef MLMARK_TRT_COMMON_H
#define MLMARK_TRT_COMMON_H

#include <NvInfer.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace mlmark {
namespace trt {

// TensorRT objects are freed with delete from TensorRT 8.0 on (destroy() is deprecated, then removed).
struct Deleter {
  template <typename T>
  void operator()(T* p) const noexcept {
    delete p;
  }
};
template <typename T>
using Ptr = std::unique_ptr<T, Deleter>;

// The process's one ILogger (TensorRT keeps using the first logger it was given). Messages go to the
// library's log: errors and warnings as such, TensorRT's info and verbose chatter at debug level.
class Logger : public nvinfer1::ILogger {
 public:
  void log(Severity severity, nvinfer1::AsciiChar const* message) noexcept override;
  // The latest error TensorRT reported, captured or not ("" when none): for failures on paths too hot
  // for an ErrorCapture (enqueue).
  std::string last_error() const;
};
Logger& logger();

// While one exists, TensorRT's error messages are collected (and logged at debug level only), so that the
// failure they explain reaches the user once, inside the error the C ABI returns.
class ErrorCapture {
 public:
  ErrorCapture();
  ~ErrorCapture();
  ErrorCapture(const ErrorCapture&) = delete;
  ErrorCapture& operator=(const ErrorCapture&) = delete;

  std::vector<std::string> errors() const;
  // The first few messages joined with "; ", or fallback when TensorRT said nothing.
  std::string summary(const std::string& fallback, std::size_t max_messages = 3) const;
  // True when a message says an allocation failed (TensorRT's kFAILED_ALLOCATION, CUDA out of memory).
  bool out_of_memory() const;

  void add(const std::string& message);  // for the logger

 private:
  ErrorCapture* outer_;
  std::vector<std::string> errors_;
};

// True when the library providing TensorRT's entry points is MLMark's TensorRT test double (tests only), which
// exports a marker TensorRT does not.
bool linked_against_test_double();
// "TensorRT 10.3.0", or "the TensorRT test double for 10.3.0": how log lines and errors name what runs.
std::string runtime_label();

// A deserialized engine and the runtime it came from (which must outlive it).
struct Engine {
  std::string path;
  std::size_t file_bytes = 0;
  Ptr<nvinfer1::IRuntime> runtime;
  Ptr<nvinfer1::ICudaEngine> engine;  // after runtime: destroyed first
};
// Deserialize an engine file on the current device. A missing, empty, truncated or foreign file is a clean
// Error(MLMARK_ERR_MODEL) naming the file and TensorRT's own reason, never a TensorRT assertion.
std::shared_ptr<Engine> load_engine(const std::string& path);

// A whole file as bytes; Error(MLMARK_ERR_MODEL) naming what it is when it is missing or unreadable.
std::string read_file(const std::string& path, const char* what);
// Write data to path, removing a partial file on failure (the caller renames a finished one into place).
void write_file(const std::string& path, const void* data, std::size_t size, const char* what);
// Write through a temporary file in the same folder and rename it over path.
void write_file_atomic(const std::string& path, const void* data, std::size_t size, const char* what);
bool file_exists(const std::string& path);

// Shapes as int64_t, whichever width nvinfer1::Dims has in this release (Dims32 up to 9, Dims64 from 10).
std::vector<int64_t> to_vector(const nvinfer1::Dims& dims);
nvinfer1::Dims to_dims(const std::vector<int64_t>& shape);
std::string shape_string(const std::vector<int64_t>& shape);

// Bits per element of a type by its nvinfer1::DataType number (= MLMARK_DTYPE_*): 4 for the packed 4-bit
// types, 0 when unknown.
int dtype_bits(int dtype);
// Bytes of a dense tensor; Error(INVALID_ARGUMENT) for a dynamic (-1) or unknown shape or type.
std::size_t tensor_bytes(const std::vector<int64_t>& shape, int dtype, const std::string& name);

}  // namespace trt
}  // namespace mlmark

#endif  // MLMARK_TRT_COMMON_H
