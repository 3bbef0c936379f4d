// Rank 0's side of mproc::mpi: jobs cut into chunks, chunks dealt to worker ranks as they free
// up (at most `chunks_in_flight` each, so a rank's next chunk is already there when it finishes
// one), results gathered in a per-job reorder buffer that the typed front end (mpi.hpp) drains.
// Every MPI call is made from the thread that called mproc::mpi::run (MPI_THREAD_FUNNELED).
#pragma once

#include <mproc/detail/function_id.hpp>
#include <mproc/detail/mpi_comm.hpp>
#include <mproc/detail/mpi_worker.hpp>
#include <mproc/error.hpp>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

MPROC_NAMESPACE_BEGIN
namespace detail::mpi {

/// One chunk's result message, as received.
struct chunk_result {
    received message;
    std::size_t status_at = 0;  // where the runner's part starts in message.bytes
};

/// One map, imap or call: how to make its chunks, and the results not yet taken.
struct job {
    std::uint64_t id = 0;
    function_id runner, fn;
    /// Appends the next chunk's payload to `out` and sets its first item's index; false when the
    /// input is exhausted.
    std::function<bool(std::vector<std::byte>& out, std::uint64_t& first)> produce;
    /// At most this many chunks made but not yet taken (0: no limit): the reorder buffer's and
    /// the look-ahead's bound.
    std::uint64_t window = 0;

    bool exhausted = false;   // produce said no more
    bool failed = false;      // a chunk failed: make no more
    std::uint64_t made = 0;   // chunks made (the next chunk's number)
    std::uint64_t taken = 0;  // chunks the front end took
    std::map<std::uint64_t, chunk_result> done;

    [[nodiscard]] bool may_make() const noexcept {
        return !exhausted && !failed && (window == 0 || made - taken < window);
    }
    /// True when every chunk made has been taken and no more will be made.
    [[nodiscard]] bool finished() const noexcept { return (exhausted || failed) && taken == made; }
};

struct engine_settings {
    unsigned chunks_in_flight = 2;
    bool root_computes = false;
    std::size_t max_piece = mpi_max_piece;
};

class engine {
public:
    engine(int size, std::vector<std::string> hosts, const engine_settings& settings)
        : size_(size),
          hosts_(std::move(hosts)),
          settings_(settings),
          out_(settings.max_piece),
          in_flight_(static_cast<std::size_t>(size), 0) {
        settings_.chunks_in_flight = std::max(1u, settings_.chunks_in_flight);
    }
    engine(const engine&) = delete;
    engine& operator=(const engine&) = delete;

    [[nodiscard]] unsigned worker_ranks() const noexcept {
        return static_cast<unsigned>(size_ - 1);
    }
    [[nodiscard]] const std::string& host(int rank) const {
        return hosts_.at(static_cast<std::size_t>(rank));
    }
    [[nodiscard]] const engine_settings& settings() const noexcept { return settings_; }

    /// Registers a job and starts dealing its chunks.
    void add(const std::shared_ptr<job>& j) {
        j->id = next_id_++;
        jobs_.emplace(j->id, j);
        dispatch();
    }
    /// Forgets a job: chunks of it still running are discarded when they come back.
    void drop(const job& j) noexcept { jobs_.erase(j.id); }

    /// Deals chunks, gathers results and, when nothing arrives, sleeps (or computes one chunk
    /// itself, with root_computes) until `ready()`.
    template <class Ready>
    void wait(Ready ready) {
        backoff idle;
        for (;;) {
            const bool moved = receive_all();
            dispatch();
            out_.test();
            if (ready()) return;
            if (moved || (settings_.root_computes && compute_one())) {
                idle.reset();
                continue;
            }
            if (running_ == 0 && !anything_to_make())
                throw StateError("mproc::mpi: waiting for a result that no rank will produce");
            idle.pause();
        }
    }

    /// Lets every chunk still running come back (discarded), then tells the workers to stop.
    void shutdown() {
        jobs_.clear();
        wait([&] { return running_ == 0; });
        for (int r = 1; r < size_; ++r) {
            std::vector<std::byte> stop = new_message();
            Encoder e(stop);
            e(kind::stop);
            out_.send(r, std::move(stop));
        }
        out_.drain();
    }

private:
    [[nodiscard]] bool anything_to_make() const {
        for (const auto& [id, j] : jobs_)
            if (j->may_make()) return true;
        return false;
    }

    /// The next chunk of the oldest job that has one, as a task message; false when none.
    bool make_chunk(std::vector<std::byte>& message, std::shared_ptr<job>& of) {
        for (auto& [id, j] : jobs_) {
            while (j->may_make()) {
                message = new_message();
                Encoder e(message);
                e(kind::task, j->id, j->made, std::uint64_t{0}, j->runner, j->fn);
                std::uint64_t first = 0;
                if (!j->produce(message, first)) {
                    j->exhausted = true;
                    break;
                }
                std::memcpy(message.data() + first_offset, &first, sizeof first);
                ++j->made;
                of = j;
                return true;
            }
        }
        return false;
    }

    /// Gives every worker rank chunks until each has chunks_in_flight, one round at a time so
    /// the first chunks spread over all ranks.
    void dispatch() {
        std::vector<std::byte> message;
        std::shared_ptr<job> of;
        for (unsigned round = 1; round <= settings_.chunks_in_flight; ++round)
            for (int r = 1; r < size_; ++r) {
                auto& count = in_flight_[static_cast<std::size_t>(r)];
                if (count >= round) continue;
                if (!make_chunk(message, of)) return;
                out_.send(r, std::move(message));
                ++count;
                ++running_;
            }
    }

    /// Rank 0 runs one chunk itself.
    bool compute_one() {
        std::vector<std::byte> message;
        std::shared_ptr<job> of;
        if (!make_chunk(message, of)) return false;
        run_context ctx;
        std::vector<std::byte> reply =
            run_task(std::span<const std::byte>(message).subspan(prefix_bytes), ctx);
        const std::uint64_t total = reply.size();
        std::memcpy(reply.data(), &total, sizeof total);
        ++running_;
        ++in_flight_[0];
        on_result(received{0, std::move(reply)});
        return true;
    }

    bool receive_all() {
        bool any = false;
        received message;
        while (try_receive(MPI_ANY_SOURCE, message)) {
            on_result(std::move(message));
            any = true;
        }
        return any;
    }

    void on_result(received&& message) {
        Decoder d(message.body());
        kind k{};
        std::uint64_t id = 0, chunk = 0;
        d(k, id, chunk);
        if (k != kind::result)
            throw DecodeError("mproc::mpi: rank 0 received something other than a result");
        auto& count = in_flight_.at(static_cast<std::size_t>(message.source));
        if (count == 0 || running_ == 0) throw DecodeError("mproc::mpi: a result nobody asked for");
        --count;
        --running_;
        const auto it = jobs_.find(id);
        if (it == jobs_.end()) return;  // a dropped job's chunk
        auto& j = *it->second;
        if (d.remaining() == 0) throw DecodeError("mproc::mpi: a result without its status");
        const std::size_t status_at = message.bytes.size() - d.remaining();
        if (static_cast<status>(message.bytes[status_at]) != status::ok) j.failed = true;
        j.done.emplace(chunk, chunk_result{std::move(message), status_at});
    }

    int size_;
    std::vector<std::string> hosts_;
    engine_settings settings_;
    sender out_;
    std::vector<unsigned> in_flight_;  // per rank (rank 0: its own chunks)
    std::uint64_t running_ = 0;
    std::uint64_t next_id_ = 1;
    std::map<std::uint64_t, std::shared_ptr<job>> jobs_;  // by id: the oldest job is dealt first
};

}  // namespace detail::mpi
MPROC_NAMESPACE_END
