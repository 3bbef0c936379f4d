// Catch2's main, built once for every test executable. Catch's POSIX signal handlers are off:
// forked children would inherit them and report a child's expected SIGTERM or SIGSEGV as a
// failure of the test that is running in the parent.
#define CATCH_CONFIG_MAIN
#define CATCH_CONFIG_NO_POSIX_SIGNALS
#include <catch2/catch.hpp>
