// The start-up handshake of mproc::mpi: every rank must run the same build, since tasks name
// functions by their offset in it. Each rank sends rank 0 its executable's build-id (or a hash of
// the file when it was linked without one), mproc's version (which versions the codec) and its
// byte order; rank 0 compares and broadcasts one verdict, so every rank stops together.
#pragma once

#include <mproc/detail/function_id.hpp>
#include <mproc/detail/mpi_comm.hpp>
#include <mproc/version.hpp>

#include <link.h>
#include <unistd.h>

#include <array>
#include <bit>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

MPROC_NAMESPACE_BEGIN
namespace detail::mpi {

/// What must match on every rank; fixed size and plain bytes, so it travels as it is.
struct identity {
    std::array<unsigned char, 32> build{};  // build-id bytes, or the file's hash
    std::uint32_t build_length = 0;
    std::uint8_t build_kind = 0;  // 1: GNU build-id, 2: hash of the executable's bytes
    std::uint8_t little_endian = 0;
    std::uint8_t pointer_bytes = 0;
    std::uint8_t pad = 0;
    std::array<char, 16> mproc_version{};
};

inline int visit_main_program(dl_phdr_info* info, std::size_t, void* data) {
    // The first module dl_iterate_phdr reports is the main program.
    auto& id = *static_cast<identity*>(data);
    const auto build = loaded_build_id(*info);
    id.build_length = static_cast<std::uint32_t>(std::min(build.size(), id.build.size()));
    std::memcpy(id.build.data(), build.data(), id.build_length);
    return 1;
}

/// This process's identity.
[[nodiscard]] inline identity own_identity() {
    identity id;
    ::dl_iterate_phdr(visit_main_program, &id);
    if (id.build_length != 0) {
        id.build_kind = 1;
    } else {
        // No build-id (linked with --build-id=none): hash the executable's bytes instead.
        std::ifstream exe("/proc/self/exe", std::ios::binary);
        std::uint64_t h1 = fnv1a(""), h2 = fnv1a("second");
        char buffer[1 << 16];
        while (exe.read(buffer, sizeof buffer) || exe.gcount() > 0) {
            const std::string_view chunk(buffer, static_cast<std::size_t>(exe.gcount()));
            h1 = fnv1a(chunk, h1);
            h2 = fnv1a(chunk, h2 ^ h1);
        }
        std::memcpy(id.build.data(), &h1, 8);
        std::memcpy(id.build.data() + 8, &h2, 8);
        id.build_length = 16;
        id.build_kind = 2;
    }
    id.little_endian = std::endian::native == std::endian::little ? 1 : 0;
    id.pointer_bytes = sizeof(void*);
    std::strncpy(id.mproc_version.data(), version_string, id.mproc_version.size() - 1);
    return id;
}

[[nodiscard]] inline std::string hex(const identity& id) {
    static constexpr char digits[] = "0123456789abcdef";
    std::string text;
    for (std::uint32_t i = 0; i < id.build_length; ++i) {
        text += digits[id.build[i] >> 4];
        text += digits[id.build[i] & 15];
    }
    return text;
}

/// Why `other` (rank `rank`, on `host`) cannot work with rank 0's `mine`, or "" when it can.
[[nodiscard]] inline std::string mismatch(const identity& mine, const identity& other, int rank,
                                          const std::string& host) {
    const std::string who = "rank " + std::to_string(rank) + " (on " + host + ")";
    if (other.little_endian != mine.little_endian || other.pointer_bytes != mine.pointer_bytes)
        return who + " runs on another architecture (byte order or pointer size) than rank 0";
    if (std::memcmp(other.mproc_version.data(), mine.mproc_version.data(),
                    mine.mproc_version.size()) != 0)
        return who + " was built with mproc " + std::string(other.mproc_version.data()) +
               ", rank 0 with mproc " + std::string(mine.mproc_version.data()) +
               " (their codecs may differ)";
    if (other.build_kind != mine.build_kind || other.build_length != mine.build_length ||
        std::memcmp(other.build.data(), mine.build.data(), mine.build_length) != 0)
        return who + " runs another executable than rank 0 (" +
               (mine.build_kind == 1 ? "build-id " : "file hash ") + hex(other) + " against " +
               hex(mine) + ")";
    return {};
}

/// This host's name.
[[nodiscard]] inline std::string host_name() {
    char name[256] = {};
    if (::gethostname(name, sizeof name - 1) != 0) return "unknown host";
    return name;
}

/// Runs the handshake on every rank (a collective call). Returns every rank's host name (on rank
/// 0; empty elsewhere) when all ranks match; otherwise returns no names and sets `failure` to the
/// same sentence on every rank.
[[nodiscard]] inline std::vector<std::string> handshake(int rank, int size, std::string& failure) {
    constexpr int host_bytes = 256;
    const identity mine = own_identity();
    std::array<char, host_bytes> host{};
    const std::string my_host = host_name();
    std::memcpy(host.data(), my_host.data(), std::min<std::size_t>(my_host.size(), host_bytes - 1));

    std::vector<identity> all(rank == 0 ? static_cast<std::size_t>(size) : 0);
    std::vector<char> hosts(rank == 0 ? static_cast<std::size_t>(size) * host_bytes : 0);
    check(MPI_Gather(&mine, sizeof mine, MPI_BYTE, all.data(), sizeof mine, MPI_BYTE, 0,
                     MPI_COMM_WORLD),
          "MPI_Gather");
    check(MPI_Gather(host.data(), host_bytes, MPI_BYTE, hosts.data(), host_bytes, MPI_BYTE, 0,
                     MPI_COMM_WORLD),
          "MPI_Gather");

    std::vector<std::string> names;
    std::array<char, 1024> verdict{};
    if (rank == 0) {
        for (int r = 0; r < size; ++r) {
            const char* h = hosts.data() + static_cast<std::size_t>(r) * host_bytes;
            names.emplace_back(h, ::strnlen(h, host_bytes));
        }
        for (int r = 1; r < size && verdict[0] == 0; ++r) {
            const std::string why = mismatch(mine, all[static_cast<std::size_t>(r)], r,
                                             names[static_cast<std::size_t>(r)]);
            std::strncpy(verdict.data(), why.c_str(), verdict.size() - 1);
        }
    }
    check(MPI_Bcast(verdict.data(), static_cast<int>(verdict.size()), MPI_CHAR, 0, MPI_COMM_WORLD),
          "MPI_Bcast");
    if (verdict[0] != 0) {
        failure = "mproc::mpi: refusing to start: " + std::string(verdict.data()) +
                  "; every rank must run the same build of the same program";
        return {};
    }
    return names;
}

}  // namespace detail::mpi
MPROC_NAMESPACE_END
