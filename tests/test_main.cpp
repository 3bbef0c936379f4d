// Catch2's main, built once for every test executable. Catch's POSIX signal handlers are off:
// forked children would inherit them and report a child's expected SIGTERM or SIGSEGV as a
// failure of the test that is running in the parent.
// mproc::init comes first, as in every program that uses the spawn or forkserver start methods:
// the test binary is also the program those methods execute.
#define CATCH_CONFIG_RUNNER
#define CATCH_CONFIG_NO_POSIX_SIGNALS
#include <catch2/catch.hpp>

#include <mproc/start_method.hpp>

int main(int argc, char** argv) {
    mproc::init(argc, argv);
    return Catch::Session().run(argc, argv);
}
