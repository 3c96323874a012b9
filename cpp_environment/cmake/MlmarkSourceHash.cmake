# The hash of everything the library is built from, embedded in the library so the Python side can
# tell a stale build from a current one. targets/native/library.py computes the same hash: keep the
# two in step (files: CMakeLists.txt and everything under cmake/, include/ and src/, skipping names
# that start with '.' or end with '~'; hash: SHA-256 of the lines "<relative path> <file SHA-256>\n"
# in sorted path order).
#
# Every hashed file is also a configure dependency, so that editing one re-runs this at build time.

function(mlmark_source_hash out_var)
  set(_root "${CMAKE_CURRENT_SOURCE_DIR}")
  file(GLOB_RECURSE _found RELATIVE "${_root}"
       "${_root}/cmake/*" "${_root}/include/*" "${_root}/src/*")
  set(_files "CMakeLists.txt")
  foreach(_f ${_found})
    if(NOT _f MATCHES "(^|/)\\." AND NOT _f MATCHES "~$")
      list(APPEND _files "${_f}")
    endif()
  endforeach()
  list(SORT _files)
  set(_manifest "")
  foreach(_f ${_files})
    file(SHA256 "${_root}/${_f}" _h)
    string(APPEND _manifest "${_f} ${_h}\n")
    set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS "${_root}/${_f}")
  endforeach()
  string(SHA256 _hash "${_manifest}")
  set(${out_var} "${_hash}" PARENT_SCOPE)
endfunction()
