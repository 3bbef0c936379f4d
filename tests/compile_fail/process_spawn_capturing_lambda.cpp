// Must not compile: a lambda with captures cannot run in a program started afresh by exec.
#include <mproc/process.hpp>

int main() {
    int offset = 3;
    mproc::Process p(mproc::spawn, [offset](int n) { return n + offset; }, 4);
    p.start();
    return p.result();
}
