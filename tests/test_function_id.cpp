// Function identity (detail/function_id.hpp): modules are named by build-id or base name, never
// by path, so an identity made on one host resolves on another that runs the same build from
// another directory.
#include <catch2/catch.hpp>

#include <mproc/detail/function_id.hpp>

#include <dlfcn.h>
#include <elf.h>
#include <link.h>

#include <cstring>
#include <vector>

namespace {
int answer() { return 42; }

/// A module as dl_iterate_phdr would report it: a name, and (when `build` is not empty) one
/// PT_NOTE segment holding a GNU build-id note, at load base 0.
struct fake_module {
    std::vector<unsigned char> note;
    ElfW(Phdr) phdr{};
    dl_phdr_info info{};

    fake_module(const char* name, std::vector<unsigned char> build) {
        if (!build.empty()) {
            ElfW(Nhdr) header{4, static_cast<ElfW(Word)>(build.size()), NT_GNU_BUILD_ID};
            note.resize(sizeof header + 4 + ((build.size() + 3) & ~std::size_t{3}));
            std::memcpy(note.data(), &header, sizeof header);
            std::memcpy(note.data() + sizeof header, "GNU", 4);
            std::memcpy(note.data() + sizeof header + 4, build.data(), build.size());
            phdr.p_type = PT_NOTE;
            phdr.p_vaddr = reinterpret_cast<ElfW(Addr)>(note.data());
            phdr.p_memsz = note.size();
            phdr.p_align = 4;
        }
        info.dlpi_addr = 0;
        info.dlpi_name = name;
        info.dlpi_phdr = &phdr;
        info.dlpi_phnum = build.empty() ? 0 : 1;
    }
};
}  // namespace

using mproc::detail::module_key;

TEST_CASE("FunctionId.round_trip.main_program_and_library", "[function_id]") {
    const auto id = mproc::detail::identify(&answer);
    CHECK(mproc::detail::resolve<int (*)()>(id)() == 42);
    // A function of a shared library (libc), reached through the dynamic linker, not a PLT stub.
    auto* getpid_address = reinterpret_cast<int (*)()>(::dlsym(RTLD_DEFAULT, "getpid"));
    REQUIRE(getpid_address != nullptr);
    const auto lib = mproc::detail::identify(getpid_address);
    CHECK_FALSE(lib.module == id.module);
    CHECK(mproc::detail::resolve<int (*)()>(lib) == getpid_address);
}

TEST_CASE("FunctionId.module_key.ignores_the_directory", "[function_id]") {
    fake_module here("/usr/lib/x86_64-linux-gnu/libwork.so.1", {});
    fake_module there("/scratch/job-1234/lib/libwork.so.1", {});
    fake_module other("/usr/lib/x86_64-linux-gnu/libother.so.1", {});
    CHECK(module_key(here.info) == module_key(there.info));
    CHECK(module_key(here.info) != module_key(other.info));
}

TEST_CASE("FunctionId.module_key.build_id_decides", "[function_id]") {
    fake_module a("/a/libwork.so.1",
                  {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20});
    fake_module b("/b/renamed.so",
                  {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20});
    fake_module rebuilt("/a/libwork.so.1",
                        {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 99});
    CHECK(mproc::detail::loaded_build_id(a.info).size() == 20);
    CHECK(module_key(a.info) == module_key(b.info));        // same build, any name
    CHECK(module_key(a.info) != module_key(rebuilt.info));  // same name, another build
}
