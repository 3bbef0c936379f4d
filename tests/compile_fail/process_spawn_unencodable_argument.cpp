// Must not compile: an argument the codec cannot encode cannot reach a program started by exec.
#include <mproc/process.hpp>

int read_it(const int* p) { return *p; }

int main() {
    static int value = 3;
    mproc::Process p(mproc::forkserver, read_it, &value);
    p.start();
    return p.result();
}
