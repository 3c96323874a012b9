# Finds TensorRT (libnvinfer, NvInfer.h) and its ONNX parser (libnvonnxparser, NvOnnxParser.h).
#
# Looks, in this order, in:
#   - TensorRT_ROOT (CMake cache variable, then environment variable): an unpacked tarball or an install
#     prefix, with include/ and lib/ (or lib64/) below it;
#   - the Debian/Ubuntu package layout that JetPack uses: /usr/include/<arch>-linux-gnu and
#     /usr/lib/<arch>-linux-gnu (aarch64 on Jetson, x86_64 on desktops), then /usr/include, /usr/lib;
#   - unpacked tarballs named TensorRT-* in /opt, /usr/local and the home folder, and /usr/local/tensorrt.
#
# The version comes from NvInferVersion.h: NV_TENSORRT_MAJOR/MINOR/PATCH, which 11.x defines through
# TRT_MAJOR_ENTERPRISE and friends, so an alias is followed to its number.
#
# Result variables:
#   TensorRT_FOUND, TensorRT_VERSION (e.g. 8.5.2), TensorRT_VERSION_MAJOR, TensorRT_INCLUDE_DIRS,
#   TensorRT_LIBRARIES, TensorRT_VERSION_HEADER (the NvInferVersion.h read)
# Cache variables: TensorRT_INCLUDE_DIR, TensorRT_ONNX_INCLUDE_DIR, TensorRT_LIBRARY, TensorRT_ONNX_LIBRARY.
# Imported target: TensorRT::TensorRT (both libraries, both include folders).
#
# Written for CMake 3.10: no features newer than that.

set(TensorRT_ROOT "${TensorRT_ROOT}" CACHE PATH "Where TensorRT is installed or unpacked (folder with include/ and lib/)")

# A new TensorRT_ROOT must win over what an earlier configure found elsewhere.
set(_trt_root_now "${TensorRT_ROOT}|$ENV{TensorRT_ROOT}")
if(DEFINED _TensorRT_ROOT_SEARCHED AND NOT _TensorRT_ROOT_SEARCHED STREQUAL _trt_root_now)
  foreach(_v TensorRT_INCLUDE_DIR TensorRT_ONNX_INCLUDE_DIR TensorRT_LIBRARY TensorRT_ONNX_LIBRARY)
    unset(${_v} CACHE)
  endforeach()
endif()
set(_TensorRT_ROOT_SEARCHED "${_trt_root_now}" CACHE INTERNAL "TensorRT_ROOT of the last search")

set(_trt_roots "")
if(TensorRT_ROOT)
  list(APPEND _trt_roots "${TensorRT_ROOT}")
endif()
if(DEFINED ENV{TensorRT_ROOT} AND NOT "$ENV{TensorRT_ROOT}" STREQUAL "")
  list(APPEND _trt_roots "$ENV{TensorRT_ROOT}")
endif()
foreach(_dir /opt /usr/local "$ENV{HOME}")
  if(_dir AND IS_DIRECTORY "${_dir}")
    file(GLOB _tarballs LIST_DIRECTORIES true "${_dir}/TensorRT-*")
    foreach(_t ${_tarballs})
      if(IS_DIRECTORY "${_t}/include")
        list(APPEND _trt_roots "${_t}")
      endif()
    endforeach()
  endif()
endforeach()
list(APPEND _trt_roots /usr/local/tensorrt)

set(_trt_include_hints "")
set(_trt_lib_hints "")
foreach(_root ${_trt_roots})
  list(APPEND _trt_include_hints "${_root}/include")
  list(APPEND _trt_lib_hints "${_root}/lib" "${_root}/lib64" "${_root}/targets/${CMAKE_SYSTEM_PROCESSOR}-linux/lib")
endforeach()
set(_trt_system_include /usr/include/aarch64-linux-gnu /usr/include/x86_64-linux-gnu /usr/include)
set(_trt_system_lib /usr/lib/aarch64-linux-gnu /usr/lib/x86_64-linux-gnu /usr/lib64 /usr/lib)

# The hints first and alone, so that a TensorRT_ROOT given wins over a packaged TensorRT.
find_path(TensorRT_INCLUDE_DIR NvInfer.h HINTS ${_trt_include_hints} NO_DEFAULT_PATH)
find_path(TensorRT_INCLUDE_DIR NvInfer.h PATHS ${_trt_system_include})
find_path(TensorRT_ONNX_INCLUDE_DIR NvOnnxParser.h HINTS "${TensorRT_INCLUDE_DIR}" ${_trt_include_hints} NO_DEFAULT_PATH)
find_path(TensorRT_ONNX_INCLUDE_DIR NvOnnxParser.h PATHS ${_trt_system_include})
find_library(TensorRT_LIBRARY nvinfer HINTS ${_trt_lib_hints} NO_DEFAULT_PATH)
find_library(TensorRT_LIBRARY nvinfer PATHS ${_trt_system_lib})
find_library(TensorRT_ONNX_LIBRARY nvonnxparser HINTS ${_trt_lib_hints} NO_DEFAULT_PATH)
find_library(TensorRT_ONNX_LIBRARY nvonnxparser PATHS ${_trt_system_lib})

# NV_TENSORRT_<part> of NvInferVersion.h, following one alias (11.x: NV_TENSORRT_MAJOR TRT_MAJOR_ENTERPRISE).
function(_trt_version_part header part out_var)
  file(STRINGS "${header}" _line REGEX "^#define[ \t]+NV_TENSORRT_${part}[ \t]+")
  set(_value "")
  if(_line)
    list(GET _line 0 _line)
    string(REGEX REPLACE "^#define[ \t]+NV_TENSORRT_${part}[ \t]+([A-Za-z0-9_]+).*$" "\\1" _value "${_line}")
    if(NOT _value MATCHES "^[0-9]+$")
      file(STRINGS "${header}" _alias REGEX "^#define[ \t]+${_value}[ \t]+[0-9]+")
      if(_alias)
        list(GET _alias 0 _alias)
        string(REGEX REPLACE "^#define[ \t]+${_value}[ \t]+([0-9]+).*$" "\\1" _value "${_alias}")
      else()
        set(_value "")
      endif()
    endif()
  endif()
  set(${out_var} "${_value}" PARENT_SCOPE)
endfunction()

set(TensorRT_VERSION "")
set(TensorRT_VERSION_HEADER "")
if(TensorRT_INCLUDE_DIR AND EXISTS "${TensorRT_INCLUDE_DIR}/NvInferVersion.h")
  set(TensorRT_VERSION_HEADER "${TensorRT_INCLUDE_DIR}/NvInferVersion.h")
  _trt_version_part("${TensorRT_VERSION_HEADER}" MAJOR TensorRT_VERSION_MAJOR)
  _trt_version_part("${TensorRT_VERSION_HEADER}" MINOR TensorRT_VERSION_MINOR)
  _trt_version_part("${TensorRT_VERSION_HEADER}" PATCH TensorRT_VERSION_PATCH)
  if(NOT TensorRT_VERSION_MAJOR STREQUAL "" AND NOT TensorRT_VERSION_MINOR STREQUAL "")
    set(TensorRT_VERSION "${TensorRT_VERSION_MAJOR}.${TensorRT_VERSION_MINOR}")
    if(NOT TensorRT_VERSION_PATCH STREQUAL "")
      set(TensorRT_VERSION "${TensorRT_VERSION}.${TensorRT_VERSION_PATCH}")
    endif()
  endif()
endif()

include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(TensorRT
  REQUIRED_VARS TensorRT_LIBRARY TensorRT_ONNX_LIBRARY TensorRT_INCLUDE_DIR TensorRT_ONNX_INCLUDE_DIR
  VERSION_VAR TensorRT_VERSION)

if(TensorRT_FOUND)
  set(TensorRT_INCLUDE_DIRS "${TensorRT_INCLUDE_DIR}")
  if(NOT TensorRT_ONNX_INCLUDE_DIR STREQUAL TensorRT_INCLUDE_DIR)
    list(APPEND TensorRT_INCLUDE_DIRS "${TensorRT_ONNX_INCLUDE_DIR}")
  endif()
  set(TensorRT_LIBRARIES "${TensorRT_LIBRARY}" "${TensorRT_ONNX_LIBRARY}")
  if(NOT TARGET TensorRT::TensorRT)
    add_library(TensorRT::TensorRT INTERFACE IMPORTED)
    set_target_properties(TensorRT::TensorRT PROPERTIES
      INTERFACE_INCLUDE_DIRECTORIES "${TensorRT_INCLUDE_DIRS}"
      INTERFACE_LINK_LIBRARIES "${TensorRT_LIBRARIES}")
  endif()
endif()

mark_as_advanced(TensorRT_INCLUDE_DIR TensorRT_ONNX_INCLUDE_DIR TensorRT_LIBRARY TensorRT_ONNX_LIBRARY)
