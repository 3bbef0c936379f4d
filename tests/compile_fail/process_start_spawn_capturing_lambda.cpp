// Must not compile: p.start(mproc::spawn) on a Process whose lambda has captures. The Process was
// made without the tag, so the check is start()'s: its deduced type says only fork can start it.
#include <mproc/process.hpp>

int main() {
    int offset = 3;
    mproc::Process p([offset](int n) { return n + offset; }, 4);
    p.start(mproc::spawn);
    return p.result();
}
