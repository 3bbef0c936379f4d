// The second translation unit: a non-inline function defined in a header would now be defined
// twice and fail to link.
#include <mproc/mproc.hpp>

int second_tu_cpu_count() { return static_cast<int>(mproc::cpu_count()); }
