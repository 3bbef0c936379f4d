// A function's identity that means the same function in another process running the same binary:
// the hash of the containing module's name plus the offset from that module's load base. Never a
// raw address, so the same message resolves after exec (another load base, ASLR) and on another
// host running the same build.
#pragma once

#include <mproc/error.hpp>

#include <link.h>

#include <cstdint>
#include <cstring>
#include <mutex>
#include <string_view>
#include <unordered_map>

MPROC_NAMESPACE_BEGIN
namespace detail {

struct function_id {
    std::uint64_t module = 0;  // FNV-1a hash of the module's path ("" for the main program)
    std::uint64_t offset = 0;  // address minus the module's load base

    friend bool operator==(const function_id&, const function_id&) = default;
    template <class Ar>
    void serialize(Ar& ar) {
        ar(module, offset);
    }
};

[[nodiscard]] constexpr std::uint64_t fnv1a(std::string_view text) noexcept {
    std::uint64_t h = 1469598103934665603ull;
    for (char c : text) h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ull;
    return h;
}

struct module_search {
    std::uintptr_t address = 0;  // find the module containing this address...
    std::uint64_t module = 0;    // ...or the module with this name hash
    bool found = false;
    std::uint64_t found_module = 0;
    std::uintptr_t base = 0;
};

inline int visit_module(dl_phdr_info* info, std::size_t, void* data) {
    auto& search = *static_cast<module_search*>(data);
    const std::uint64_t name_hash = fnv1a(info->dlpi_name ? info->dlpi_name : "");
    if (search.address == 0) {
        if (name_hash != search.module) return 0;
    } else {
        bool inside = false;
        for (int i = 0; i < info->dlpi_phnum && !inside; ++i) {
            const auto& ph = info->dlpi_phdr[i];
            const std::uintptr_t start = info->dlpi_addr + ph.p_vaddr;
            inside = ph.p_type == PT_LOAD && search.address >= start && search.address < start + ph.p_memsz;
        }
        if (!inside) return 0;
    }
    search.found = true;
    search.found_module = name_hash;
    search.base = info->dlpi_addr;
    return 1;
}

/// The identity of the function at `address`.
/// @throws Error when the address is in no loaded module (a JIT-made function, say).
[[nodiscard]] inline function_id identify_function(const void* address) {
    module_search search;
    search.address = reinterpret_cast<std::uintptr_t>(address);
    ::dl_iterate_phdr(visit_module, &search);
    if (!search.found) throw Error("mproc: a function outside every loaded module cannot be sent");
    return {search.found_module, search.address - search.base};
}

/// The address of the function `id` names in this process. Module bases are looked up once
/// each and cached.
/// @throws Error when no loaded module has that name: a worker forked before its parent loaded
///         a library (dlopen) does not have it. Never a guess at an address.
[[nodiscard]] inline void* resolve_function(const function_id& id) {
    static std::mutex lock;
    static std::unordered_map<std::uint64_t, std::uintptr_t> bases;
    std::lock_guard guard(lock);
    auto it = bases.find(id.module);
    if (it == bases.end()) {
        module_search search;
        search.module = id.module;
        ::dl_iterate_phdr(visit_module, &search);
        if (!search.found)
            throw Error("mproc: the function's module is not loaded in this worker (a shared library "
                        "loaded with dlopen after the Pool started?): load it before making the Pool");
        it = bases.emplace(id.module, search.base).first;
    }
    return reinterpret_cast<void*>(it->second + id.offset);
}

/// The identity of a function pointer, cached per pointer type for the last pointer seen, since
/// a map sends the same function over and over.
template <class Fp>
[[nodiscard]] function_id identify(Fp fp) {
    static_assert(std::is_pointer_v<Fp> && std::is_function_v<std::remove_pointer_t<Fp>>);
    thread_local Fp last = nullptr;
    thread_local function_id last_id{};
    if (fp != last) {
        last_id = identify_function(reinterpret_cast<const void*>(fp));
        last = fp;
    }
    return last_id;
}

/// The function `id` names, as a pointer of type Fp; the last one resolved is cached, since a
/// worker runs chunk after chunk of the same job.
template <class Fp>
[[nodiscard]] Fp resolve(const function_id& id) {
    thread_local function_id last_id{};
    thread_local Fp last = nullptr;
    if (last == nullptr || !(id == last_id)) {
        last = reinterpret_cast<Fp>(resolve_function(id));
        last_id = id;
    }
    return last;
}

}  // namespace detail
MPROC_NAMESPACE_END
