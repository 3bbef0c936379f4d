// Progress of a long map: a callback, and a bar on stderr when stderr is a terminal.
#pragma once

#include <mproc/detail/pool_options.hpp>

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>

MPROC_NAMESPACE_BEGIN
namespace detail {

/// Reports (done, total) at most ten times a second, and once more at the end.
class progress_reporter {
public:
    progress_reporter(const PoolOptions& options, std::size_t total)
        : callback_(options.on_progress), bar_(options.progress && ::isatty(STDERR_FILENO) == 1),
          total_(total), started_(clock::now()) {}
    progress_reporter(const progress_reporter&) = delete;
    progress_reporter& operator=(const progress_reporter&) = delete;
    ~progress_reporter() {
        if (bar_ && drawn_) std::fputc('\n', stderr);  // leave the bar on its own finished line
    }

    [[nodiscard]] bool active() const noexcept { return callback_ || bar_; }

    /// Reports unless the last report was less than 100 ms ago (`final` reports regardless).
    void update(std::size_t done, bool final = false) {
        const auto now = clock::now();
        if (!final && now - last_ < std::chrono::milliseconds(100)) return;
        last_ = now;
        if (callback_) callback_(done, total_);
        if (bar_) draw(done, std::chrono::duration<double>(now - started_).count());
    }

private:
    using clock = std::chrono::steady_clock;

    void draw(std::size_t done, double seconds) {
        constexpr int width = 30;
        const double fraction = total_ ? static_cast<double>(done) / static_cast<double>(total_) : 1.0;
        std::string bar(width, ' ');
        for (int i = 0; i < static_cast<int>(fraction * width); ++i) bar[static_cast<std::size_t>(i)] = '#';
        const double rate = seconds > 0 ? static_cast<double>(done) / seconds : 0.0;
        const double eta = rate > 0 ? static_cast<double>(total_ - done) / rate : 0.0;
        // \r and erase-to-end-of-line redraw in place; one fputs per frame keeps frames whole.
        char line[160];
        std::snprintf(line, sizeof line, "\r[%s] %zu/%zu %.0f/s ETA %.0fs\033[K", bar.c_str(), done, total_, rate, eta);
        std::fputs(line, stderr);
        std::fflush(stderr);
        drawn_ = true;
    }

    std::function<void(std::size_t, std::size_t)> callback_;
    bool bar_;
    bool drawn_ = false;
    std::size_t total_;
    clock::time_point started_;
    clock::time_point last_{};
};

}  // namespace detail
MPROC_NAMESPACE_END
