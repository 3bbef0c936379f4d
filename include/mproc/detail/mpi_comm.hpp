// mproc::mpi's transport: one logical message is one MPI_BYTE message (split in pieces only past
// MPI's int count, about 2 GiB: Open MPI 4.1 has no large-count calls), sent without blocking and
// received with MPI_Mprobe/MPI_Mrecv so the buffer is sized exactly; a rank with nothing to do
// waits in MPI_Improbe with a back-off that ends in 1 ms naps, so an idle rank sleeps.
#pragma once

#include <mproc/error.hpp>

// MPI's C API only: Open MPI's mpi.h otherwise pulls in its removed C++ bindings, which need
// libmpi_cxx at link time.
#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1
#endif
#ifndef MPICH_SKIP_MPICXX
#define MPICH_SKIP_MPICXX 1
#endif
#include <mpi.h>

#include <time.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <span>
#include <string>
#include <vector>

MPROC_NAMESPACE_BEGIN
namespace detail::mpi {

/// The first piece of every message; the others of a split one follow on tag_part, in order
/// (MPI never reorders two messages of one sender, tag and communicator).
inline constexpr int tag_head = 7301;
inline constexpr int tag_part = 7302;

/// Bytes every message starts with: the whole message's length (prefix included), so the
/// receiver knows how many pieces follow.
inline constexpr std::size_t prefix_bytes = sizeof(std::uint64_t);

/// The largest piece Open MPI 4.1 can send as one message (its counts are int).
inline constexpr std::size_t mpi_max_piece = std::size_t{1} << 30;

[[noreturn]] inline void throw_mpi(int code, const char* call) {
    char text[MPI_MAX_ERROR_STRING] = {};
    int length = 0;
    MPI_Error_string(code, text, &length);
    throw Error(std::string("mproc::mpi: ") + call +
                " failed: " + std::string(text, static_cast<std::size_t>(length)));
}
inline void check(int code, const char* call) {
    if (code != MPI_SUCCESS) throw_mpi(code, call);
}

/// Pieces sent after the first of a split message, by this process (what tests check the split by).
inline std::uint64_t& parts_sent() noexcept {
    static std::uint64_t count = 0;
    return count;
}

/// A message buffer with room for the length prefix, which send() fills in.
[[nodiscard]] inline std::vector<std::byte> new_message() {
    return std::vector<std::byte>(prefix_bytes);
}

/// Sends without blocking (so two ranks sending each other big messages never deadlock) and
/// keeps each buffer alive until MPI is done with it.
class sender {
public:
    explicit sender(std::size_t max_piece)
        : max_piece_(std::clamp<std::size_t>(max_piece, prefix_bytes + 1, mpi_max_piece)) {}
    sender(const sender&) = delete;
    sender& operator=(const sender&) = delete;
    ~sender() {
        // Normal exits drain() first; after an error, MPI_Abort or MPI_Finalize ends the rest.
        for (auto& p : pending_)
            for (auto& r : p.requests)
                if (r != MPI_REQUEST_NULL) MPI_Request_free(&r);
    }

    /// Sends `message` (made by new_message(), then appended to) to `rank`.
    void send(int rank, std::vector<std::byte> message) {
        const std::uint64_t total = message.size();
        std::memcpy(message.data(), &total, sizeof total);
        pending_.push_back({std::move(message), {}});
        auto& p = pending_.back();
        for (std::size_t at = 0; at < p.bytes.size(); at += max_piece_) {
            const auto n = static_cast<int>(std::min(max_piece_, p.bytes.size() - at));
            MPI_Request request = MPI_REQUEST_NULL;
            check(MPI_Isend(p.bytes.data() + at, n, MPI_BYTE, rank, at == 0 ? tag_head : tag_part,
                            MPI_COMM_WORLD, &request),
                  "MPI_Isend");
            p.requests.push_back(request);
            if (at != 0) ++parts_sent();
        }
        test();
    }
    /// Frees the buffers MPI has sent (and lets MPI progress them).
    void test() {
        while (!pending_.empty()) {
            auto& p = pending_.front();
            int done = 0;
            check(MPI_Testall(static_cast<int>(p.requests.size()), p.requests.data(), &done,
                              MPI_STATUSES_IGNORE),
                  "MPI_Testall");
            if (!done) return;
            pending_.pop_front();
        }
    }
    /// Waits until every message sent has left.
    void drain() {
        for (auto& p : pending_)
            check(MPI_Waitall(static_cast<int>(p.requests.size()), p.requests.data(),
                              MPI_STATUSES_IGNORE),
                  "MPI_Waitall");
        pending_.clear();
    }
    [[nodiscard]] std::size_t max_piece() const noexcept { return max_piece_; }

private:
    struct pending {
        std::vector<std::byte> bytes;
        std::vector<MPI_Request> requests;
    };
    std::size_t max_piece_;
    std::deque<pending> pending_;
};

/// One message received whole: who sent it and its bytes after the length prefix.
struct received {
    int source = -1;
    std::vector<std::byte> bytes;  // prefix included; body() skips it
    [[nodiscard]] std::span<const std::byte> body() const noexcept {
        return std::span<const std::byte>(bytes).subspan(prefix_bytes);
    }
};

/// Receives the message whose head MPI_Improbe matched, and its pieces. Never trusts the length
/// prefix for an allocation: the buffer grows by the bytes that actually arrive.
/// @throws DecodeError for a message whose pieces do not add up to its prefix.
[[nodiscard]] inline received receive_matched(MPI_Message& message, const MPI_Status& status) {
    received r;
    r.source = status.MPI_SOURCE;
    int count = 0;
    check(MPI_Get_count(&status, MPI_BYTE, &count), "MPI_Get_count");
    r.bytes.resize(static_cast<std::size_t>(count));
    check(MPI_Mrecv(r.bytes.data(), count, MPI_BYTE, &message, MPI_STATUS_IGNORE), "MPI_Mrecv");
    if (r.bytes.size() < prefix_bytes)
        throw DecodeError("mproc::mpi: a message shorter than its length prefix");
    std::uint64_t total = 0;
    std::memcpy(&total, r.bytes.data(), sizeof total);
    if (total < r.bytes.size())
        throw DecodeError("mproc::mpi: a message longer than its length prefix says");
    while (r.bytes.size() < total) {
        MPI_Message part;
        MPI_Status part_status;
        check(MPI_Mprobe(r.source, tag_part, MPI_COMM_WORLD, &part, &part_status), "MPI_Mprobe");
        int n = 0;
        check(MPI_Get_count(&part_status, MPI_BYTE, &n), "MPI_Get_count");
        const std::size_t at = r.bytes.size();
        if (n <= 0 || static_cast<std::uint64_t>(n) > total - at) {
            std::vector<std::byte> discard(static_cast<std::size_t>(std::max(n, 0)));
            MPI_Mrecv(discard.data(), n, MPI_BYTE, &part, MPI_STATUS_IGNORE);
            throw DecodeError("mproc::mpi: a message's pieces do not add up to its length");
        }
        r.bytes.resize(at + static_cast<std::size_t>(n));
        check(MPI_Mrecv(r.bytes.data() + at, n, MPI_BYTE, &part, MPI_STATUS_IGNORE), "MPI_Mrecv");
    }
    return r;
}

/// The next message from `source` (MPI_ANY_SOURCE for any), if one has arrived.
[[nodiscard]] inline bool try_receive(int source, received& out) {
    int found = 0;
    MPI_Message message;
    MPI_Status status;
    check(MPI_Improbe(source, tag_head, MPI_COMM_WORLD, &found, &message, &status), "MPI_Improbe");
    if (!found) return false;
    out = receive_matched(message, status);
    return true;
}

/// How a rank waits for a message without burning its core: polls for a short spin (a reply
/// usually comes within microseconds when work flows), then naps, doubling from 16 us. For the
/// first few milliseconds of a wait the naps stay short (64 us): rank 0 and a worker rank each
/// wait on the other, and long naps on both sides fed each other (a rank that woke late left the
/// other waiting long enough to nap long too), so a chunk of 30 us cost about 1.5 ms per round
/// trip in hybrid mode. After that the naps grow to 1 ms, which bounds the latency an idle rank
/// adds when work arrives and keeps its CPU use near zero (about 1000 polls a second).
class backoff {
public:
    void reset() noexcept { spins_ = 0, nap_ns_ = 0, napping_since_ns_ = 0; }
    void pause() noexcept {
        if (spins_ < spin_polls) {
            ++spins_;
            return;
        }
        const std::int64_t now = now_ns();
        if (napping_since_ns_ == 0) napping_since_ns_ = now;
        const long cap = now - napping_since_ns_ < short_naps_ns ? short_nap_cap_ns : max_nap_ns;
        nap_ns_ = nap_ns_ == 0 ? first_nap_ns : std::min(nap_ns_ * 2, cap);
        timespec ts{0, static_cast<long>(nap_ns_)};
        ::nanosleep(&ts, nullptr);
    }

    static constexpr unsigned spin_polls = 200;
    static constexpr long first_nap_ns = 16'000;
    static constexpr long short_nap_cap_ns = 64'000;
    static constexpr std::int64_t short_naps_ns = 5'000'000;
    static constexpr long max_nap_ns = 1'000'000;

private:
    [[nodiscard]] static std::int64_t now_ns() noexcept {
        timespec ts{};
        ::clock_gettime(CLOCK_MONOTONIC, &ts);
        return std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
    }

    unsigned spins_ = 0;
    long nap_ns_ = 0;
    std::int64_t napping_since_ns_ = 0;  // when this wait's naps began (0: still spinning)
};

}  // namespace detail::mpi
MPROC_NAMESPACE_END
