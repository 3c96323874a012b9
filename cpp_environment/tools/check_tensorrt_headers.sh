#!/usr/bin/env bash
# Compile the TensorRT backend (cpp_environment/src/tensorrt/*.cpp) against one TensorRT release's
# headers, without TensorRT's libraries or a GPU: proves that each release's code path compiles and uses
# nothing that release marks deprecated. It compiles only; it downloads and installs nothing.
#
#   tools/check_tensorrt_headers.sh --trt-include DIR [--onnx-include DIR] [--std c++14]
#                                   [--cuda-include DIR] [--cxx g++] [--object] [--quiet]
#
#   --trt-include   folder with NvInfer.h and NvInferVersion.h of the release to check
#   --onnx-include  folder with that release's NvOnnxParser.h (default: --trt-include)
#   --std           C++ standard, as the release's JetPack compiler uses it (default c++14)
#   --cuda-include  folder with cuda_runtime_api.h (default: next to nvcc, $CUDA_HOME or /usr/local/cuda)
#   --cxx           compiler (default $CXX, else g++)
#   --object        compile to object files instead of -fsyntax-only (also runs code generation) and list
#                   what the objects need from libnvinfer/libnvonnxparser (their extern "C" entry points)
#   --quiet         print only the result line
#
# Flags: -Wall -Wextra -Werror=deprecated-declarations, TensorRT and CUDA headers as system headers (as
# the CMake build includes them), so what is reported is this project's code. Prints one result line,
#   RESULT tensorrt=<version> std=<std> cxx=<compiler version>: <n> files, <e> errors, <w> warnings (<d> deprecation)
# and exits 0 only when there are no errors and no warnings.
set -u

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
trt_include=""
onnx_include=""
std="c++14"
cuda_include=""
cxx="${CXX:-g++}"
mode="-fsyntax-only"
quiet=0

usage() { sed -n '2,22p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
  case "$1" in
    --trt-include) trt_include="${2:-}"; shift 2 ;;
    --onnx-include) onnx_include="${2:-}"; shift 2 ;;
    --std) std="${2:-}"; shift 2 ;;
    --cuda-include) cuda_include="${2:-}"; shift 2 ;;
    --cxx) cxx="${2:-}"; shift 2 ;;
    --object) mode="-c"; shift ;;
    --quiet) quiet=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "error: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

[ -n "$trt_include" ] || { echo "error: --trt-include is required (see --help)" >&2; exit 2; }
[ -f "$trt_include/NvInfer.h" ] || { echo "error: $trt_include has no NvInfer.h" >&2; exit 2; }
[ -f "$trt_include/NvInferVersion.h" ] || { echo "error: $trt_include has no NvInferVersion.h" >&2; exit 2; }
[ -n "$onnx_include" ] || onnx_include="$trt_include"
[ -f "$onnx_include/NvOnnxParser.h" ] || { echo "error: $onnx_include has no NvOnnxParser.h (give --onnx-include)" >&2; exit 2; }
command -v "$cxx" >/dev/null 2>&1 || { echo "error: compiler '$cxx' not found" >&2; exit 2; }

if [ -z "$cuda_include" ]; then
  for candidate in "$(dirname "$(command -v nvcc 2>/dev/null || echo /nonexistent/bin/nvcc)")/../include" \
                   "${CUDA_HOME:-/nonexistent}/include" /usr/local/cuda/include; do
    if [ -f "$candidate/cuda_runtime_api.h" ]; then cuda_include="$(cd "$candidate" && pwd)"; break; fi
  done
fi
[ -n "$cuda_include" ] && [ -f "$cuda_include/cuda_runtime_api.h" ] || {
  echo "error: cuda_runtime_api.h not found; give --cuda-include" >&2; exit 2; }

# NV_TENSORRT_<part>, following one alias (11.x: #define NV_TENSORRT_MAJOR TRT_MAJOR_ENTERPRISE).
version_part() {
  local value
  value="$(sed -n "s/^#define[[:space:]]\{1,\}NV_TENSORRT_$1[[:space:]]\{1,\}\([A-Za-z0-9_]\{1,\}\).*/\1/p" "$trt_include/NvInferVersion.h" | head -n 1)"
  case "$value" in
    ''|*[!0-9]*)
      [ -n "$value" ] && value="$(sed -n "s/^#define[[:space:]]\{1,\}$value[[:space:]]\{1,\}\([0-9]\{1,\}\).*/\1/p" "$trt_include/NvInferVersion.h" | head -n 1)" ;;
  esac
  echo "${value:-?}"
}
version="$(version_part MAJOR).$(version_part MINOR).$(version_part PATCH)"
compiler="$("$cxx" --version 2>/dev/null | head -n 1)"

sources=("$root"/src/tensorrt/*.cpp)
[ -f "${sources[0]}" ] || { echo "error: no sources in $root/src/tensorrt" >&2; exit 2; }

workdir="$(mktemp -d)"
trap 'rm -rf "$workdir"' EXIT
errors=0
warnings=0
deprecations=0
for src in "${sources[@]}"; do
  name="$(basename "$src")"
  log="$workdir/$name.log"
  out=()
  [ "$mode" = "-c" ] && out=(-o "$workdir/$name.o")
  "$cxx" "-std=$std" "$mode" -Wall -Wextra -Wdeprecated-declarations -Werror=deprecated-declarations \
    -fPIC -I "$root/include" -I "$root/src" \
    -isystem "$trt_include" -isystem "$onnx_include" -isystem "$cuda_include" \
    "${out[@]}" "$src" >"$log" 2>&1
  rc=$?
  e="$(grep -c ': error:' "$log")"
  w="$(grep -c ': warning:' "$log")"
  d="$(grep -c 'deprecated' "$log")"
  [ "$rc" -ne 0 ] && [ "$e" -eq 0 ] && e=1  # a failure without a parsable line still counts
  errors=$((errors + e))
  warnings=$((warnings + w))
  deprecations=$((deprecations + d))
  if [ "$quiet" -eq 0 ]; then
    echo "$name: $e error(s), $w warning(s)"
    if [ "$e" -ne 0 ] || [ "$w" -ne 0 ]; then sed 's/^/    /' "$log"; fi
  fi
done

if [ "$mode" = "-c" ] && command -v nm >/dev/null 2>&1 && ls "$workdir"/*.o >/dev/null 2>&1; then
  # TensorRT's classes are all inline or virtual; only a few extern "C" functions are linked. A C++ symbol
  # of nvinfer1:: or nvonnxparser:: here would be a link error against the real library.
  nm --defined-only "$workdir"/*.o | awk 'NF == 3 {print $3}' | sort -u >"$workdir/defined.txt"
  nm -u "$workdir"/*.o | awk 'NF == 2 {print $2}' | sort -u >"$workdir/undefined.txt"
  comm -23 "$workdir/undefined.txt" "$workdir/defined.txt" >"$workdir/external.txt"
  needed="$(grep -E 'INTERNAL|getInferLib|nvinfer1|nvonnxparser' "$workdir/external.txt" | tr '\n' ' ')"
  echo "needs from TensorRT: ${needed:-nothing}"
  cxx_symbols="$(grep -cE 'nvinfer1|nvonnxparser' "$workdir/external.txt")"
  [ "$cxx_symbols" -eq 0 ] || { echo "error: the objects need $cxx_symbols TensorRT C++ symbols"; errors=$((errors + 1)); }
fi

echo "RESULT tensorrt=$version std=$std cxx=$compiler headers=$trt_include onnx=$onnx_include cuda=$cuda_include:" \
     "${#sources[@]} files, $errors errors, $warnings warnings ($deprecations deprecation)"
[ "$errors" -eq 0 ] && [ "$warnings" -eq 0 ]
