// Process start+join latency by fork and forkserver beside raw fork+waitpid, the three
// interleaved: each run after `idle_ms` of sleep (a program that starts a process now and then:
// the forkserver's spare child is ready), or back to back with 0. Prints the fastest and the
// median of each, and the ratios to raw fork+waitpid.
//   ./start_latency [runs = 150] [idle_ms = 2]
#include <mproc/process.hpp>
#include <mproc/start_method.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

namespace {
using clock_type = std::chrono::steady_clock;

void nothing() {}

struct samples {
    std::vector<double> us;
    void add(clock_type::time_point since) {
        us.push_back(std::chrono::duration<double, std::micro>(clock_type::now() - since).count());
    }
    double fastest() { return *std::min_element(us.begin(), us.end()); }
    double median() {
        std::sort(us.begin(), us.end());
        return us[us.size() / 2];
    }
};
}  // namespace

int main(int argc, char** argv) {
    mproc::init(argc, argv);
    const int runs = argc > 1 ? std::atoi(argv[1]) : 150;
    const auto idle = std::chrono::milliseconds(argc > 2 ? std::atoi(argv[2]) : 2);
    { mproc::Process warm(nothing); warm.start(mproc::forkserver); warm.join(); }  // the server's start
    samples raw, forked, served;
    for (int i = 0; i < runs; ++i) {
        std::this_thread::sleep_for(idle);
        auto t0 = clock_type::now();
        const pid_t pid = ::fork();
        if (pid == 0) ::_exit(0);
        int status;
        ::waitpid(pid, &status, 0);
        raw.add(t0);
        std::this_thread::sleep_for(idle);
        t0 = clock_type::now();
        { mproc::Process p(nothing); p.start(); p.join(); }
        forked.add(t0);
        std::this_thread::sleep_for(idle);
        t0 = clock_type::now();
        { mproc::Process p(nothing); p.start(mproc::forkserver); p.join(); }
        served.add(t0);
    }
    const double base = raw.median();
    std::printf("%d runs, %lld ms idle before each\n", runs, static_cast<long long>(idle.count()));
    std::printf("raw fork+waitpid   fastest %7.0f us  median %7.0f us\n", raw.fastest(), base);
    std::printf("Process, fork      fastest %7.0f us  median %7.0f us  %.2fx raw\n", forked.fastest(), forked.median(), forked.median() / base);
    std::printf("Process, forkserver fastest %6.0f us  median %7.0f us  %.2fx raw\n", served.fastest(), served.median(), served.median() / base);
}
