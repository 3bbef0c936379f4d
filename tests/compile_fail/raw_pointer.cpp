// Must not compile: a raw pointer would arrive in another process as a dangling address.
#include <mproc/codec.hpp>

int main() {
    int x = 1;
    int* p = &x;
    auto bytes = mproc::encode(p);
    return static_cast<int>(bytes.size());
}
