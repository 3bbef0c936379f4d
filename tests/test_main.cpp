// Catch2's main, built once for every test executable. Catch's POSIX signal handlers are off:
// forked children would inherit them and report a child's expected SIGTERM or SIGSEGV as a
// failure of the test that is running in the parent.
// mproc::init comes first, as in every program that uses the spawn or forkserver start methods:
// the test binary is also the program those methods execute.
#define CATCH_CONFIG_RUNNER
#define CATCH_CONFIG_NO_POSIX_SIGNALS
#include <catch2/catch.hpp>

#include <mproc/detail/sys.hpp>
#include <mproc/start_method.hpp>

#include <csignal>
#include <cstdlib>
#include <cstring>

namespace {
ssize_t read_after_a_sigint(int fd, void* buffer, size_t size) {
    static bool raised = false;
    if (!raised) {
        raised = true;
        ::raise(SIGINT);
    }
    return ::read(fd, buffer, size);
}
}  // namespace

int main(int argc, char** argv) {
    // A test hook (Interrupt.sigint_between_a_workers_exec_and_its_first_line): a process mproc
    // started by exec, with MPROC_TEST_SIGINT_AT_START in its environment, gets a SIGINT here,
    // before mproc::init, and another at its first read through the sys() seam (a forkserver's
    // child: when it reads its request), the moments a Ctrl-C could land before a Pool worker
    // ignores it.
    if (argc > 1 && std::strcmp(argv[1], mproc::detail::exec_marker) == 0 && std::getenv("MPROC_TEST_SIGINT_AT_START")) {
        ::raise(SIGINT);
        mproc::detail::sys().read = read_after_a_sigint;
    }
    mproc::init(argc, argv);
    return Catch::Session().run(argc, argv);
}
