# Finds LibTorch (the one inside the Python torch wheel unless Torch_DIR or
# CMAKE_PREFIX_PATH names another) and sets TORCH_LIBRARIES and
# TORCH_INSTALL_PREFIX.
#
# The CMake config of a CUDA build of torch stops with an error when no CUDA
# toolkit is installed. A build without the CUDA backend needs none of torch's
# CUDA parts, so it describes the CPU libraries of the same install by hand.

find_package(Python3 COMPONENTS Interpreter QUIET)
if(NOT Torch_DIR)
  if(Python3_Interpreter_FOUND)
    execute_process(
      COMMAND ${Python3_EXECUTABLE} -c "import torch.utils; print(torch.utils.cmake_prefix_path)"
      OUTPUT_VARIABLE _totalnorm_torch_prefix OUTPUT_STRIP_TRAILING_WHITESPACE
      RESULT_VARIABLE _totalnorm_torch_found ERROR_QUIET)
    if(_totalnorm_torch_found EQUAL 0)
      list(APPEND CMAKE_PREFIX_PATH "${_totalnorm_torch_prefix}")
    endif()
  endif()
endif()

if(TOTALNORM_CUDA)
  # torch's config wants NVRTC, which a minimal toolkit may lack; the pip wheels
  # of torch's CUDA libraries (site-packages/nvidia/cu*/lib) carry it.
  if(Python3_EXECUTABLE)
    execute_process(
      COMMAND ${Python3_EXECUTABLE} -c "import glob, os, torch; print(';'.join(glob.glob(os.path.join(os.path.dirname(os.path.dirname(torch.__file__)), 'nvidia', '*', 'lib'))))"
      OUTPUT_VARIABLE _totalnorm_nvidia_libs OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
  endif()
  find_library(CUDA_nvrtc_LIBRARY NAMES nvrtc libnvrtc.so.13 libnvrtc.so.12
    HINTS ${CUDA_TOOLKIT_ROOT_DIR}/lib64 ${_totalnorm_nvidia_libs})
  # torch takes its architectures from TORCH_CUDA_ARCH_LIST and warns when this is set.
  unset(CMAKE_CUDA_ARCHITECTURES)
  unset(CMAKE_CUDA_ARCHITECTURES CACHE)
  find_package(Torch REQUIRED)
  # torch asks for CUDA_STANDARD 20, which CMake < 3.26 cannot pass to nvcc;
  # CMakeLists.txt passes -std=c++20 itself.
  unset(CMAKE_CUDA_STANDARD)
  set(CMAKE_CUDA_STANDARD_REQUIRED OFF)
  return()
endif()

find_file(_totalnorm_torch_config TorchConfig.cmake
  PATHS ${Torch_DIR} PATH_SUFFIXES Torch share/cmake/Torch NO_CACHE)
if(NOT _totalnorm_torch_config)
  message(FATAL_ERROR "LibTorch not found: pip install torch, or set Torch_DIR")
endif()
get_filename_component(TORCH_INSTALL_PREFIX "${_totalnorm_torch_config}/../../../.." ABSOLUTE)
file(READ "${_totalnorm_torch_config}" _totalnorm_torch_config_text)
string(REGEX MATCH "_GLIBCXX_USE_CXX11_ABI=([01])" _totalnorm_abi "${_totalnorm_torch_config_text}")
set(TORCH_CXX11_ABI "${CMAKE_MATCH_1}")

add_library(torch INTERFACE IMPORTED)
target_include_directories(torch INTERFACE
  ${TORCH_INSTALL_PREFIX}/include ${TORCH_INSTALL_PREFIX}/include/torch/csrc/api/include)
target_link_libraries(torch INTERFACE
  ${TORCH_INSTALL_PREFIX}/lib/libtorch.so
  ${TORCH_INSTALL_PREFIX}/lib/libtorch_cpu.so
  ${TORCH_INSTALL_PREFIX}/lib/libc10.so)
if(NOT TORCH_CXX11_ABI STREQUAL "")
  target_compile_definitions(torch INTERFACE _GLIBCXX_USE_CXX11_ABI=${TORCH_CXX11_ABI})
endif()
set(TORCH_LIBRARIES torch)
message(STATUS "totalnorm: LibTorch CPU libraries from ${TORCH_INSTALL_PREFIX}")
