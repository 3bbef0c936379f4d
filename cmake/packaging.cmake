# The Debian package: `cpack -G DEB` in a configured build directory makes
# libmproc-dev_<version>_all.deb from the install rules (headers, the CMake package, mproc.pc,
# and the license, README and changelog under /usr/share/doc/mproc).
# Header-only, so one package serves every architecture. The install prefix of the package is
# /usr, whatever CMAKE_INSTALL_PREFIX the build uses.
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME libmproc-dev)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_VENDOR "The mproc developers")
set(CPACK_PACKAGE_CONTACT "The mproc developers")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "Python's multiprocessing for C++20 on Linux (header-only)")
set(CPACK_DEBIAN_PACKAGE_DESCRIPTION
    "Process, Pool, Queue, Pipe, Lock, Semaphore, SharedValue and their relatives over fork,\n\
shared memory and futexes: parallel maps over every core with crash isolation, typed\n\
messages between processes, and process-shared synchronization. Header-only; needs only a\n\
C++20 compiler and Linux 5.3 or later.")
set(CPACK_RESOURCE_FILE_LICENSE ${PROJECT_SOURCE_DIR}/LICENSE)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)  # libmproc-dev_<version>_all.deb
set(CPACK_DEBIAN_PACKAGE_ARCHITECTURE all)
set(CPACK_DEBIAN_PACKAGE_SECTION libdevel)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
# Nothing is needed at run time but a compiler; these build the examples, tests and benchmarks.
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS "g++ (>= 4:12), cmake (>= 3.21), pkg-config")
set(CPACK_DEBIAN_PACKAGE_SUGGESTS "libfmt-dev, catch2, libbenchmark-dev, libgmp-dev, libopenmpi-dev")
include(CPack)
