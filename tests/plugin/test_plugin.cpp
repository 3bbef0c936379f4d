// A shared library the Pool tests load with dlopen: a function that lives in no module the
// test program had when its pool started.
#include <cstdint>

extern "C" std::int64_t mproc_test_plugin_triple(std::int64_t x) { return 3 * x; }
