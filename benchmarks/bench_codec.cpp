// mproc::codec benchmarks. The baseline is the raw mechanism in the same binary: encoding and
// decoding 1 MiB of doubles cannot beat two memcpys of 1 MiB (into the message, out of it).
//   bench_codec --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
#include <mproc/codec.hpp>

#include <benchmark/benchmark.h>

#include <cstring>
#include <map>
#include <string>
#include <vector>

namespace {

constexpr std::size_t kMiB = std::size_t{1} << 20;

std::vector<double> mib_of_doubles() {
    std::vector<double> v(kMiB / sizeof(double));
    for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<double>(i) * 0.5;
    return v;
}

// Baseline: copy 1 MiB into a message buffer and back out, both preallocated.
void BM_memcpy_2x_1MiB(benchmark::State& state) {
    const auto src = mib_of_doubles();
    std::vector<std::byte> message(kMiB);
    std::vector<double> dst(src.size());
    for (auto _ : state) {
        std::memcpy(message.data(), src.data(), kMiB);
        benchmark::DoNotOptimize(message.data());
        std::memcpy(dst.data(), message.data(), kMiB);
        benchmark::DoNotOptimize(dst.data());
        benchmark::ClobberMemory();
    }
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * kMiB));
}
BENCHMARK(BM_memcpy_2x_1MiB);

// The codec with a reused message buffer (as Pipe and Queue use it); decode allocates the
// returned vector, as any by-value decode must.
void BM_codec_vector_double_1MiB(benchmark::State& state) {
    const auto src = mib_of_doubles();
    std::vector<std::byte> message;
    for (auto _ : state) {
        message.clear();
        mproc::encode_into(message, src);
        auto out = mproc::decode<std::vector<double>>(message);
        benchmark::DoNotOptimize(out.data());
    }
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * kMiB));
}
BENCHMARK(BM_codec_vector_double_1MiB);

// The same with a fresh message vector each time (mproc::encode).
void BM_codec_vector_double_1MiB_fresh(benchmark::State& state) {
    const auto src = mib_of_doubles();
    for (auto _ : state) {
        auto message = mproc::encode(src);
        auto out = mproc::decode<std::vector<double>>(message);
        benchmark::DoNotOptimize(out.data());
    }
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * kMiB));
}
BENCHMARK(BM_codec_vector_double_1MiB_fresh);

struct Order {
    std::int64_t id = 0;
    std::string symbol;
    double price = 0;
    std::int32_t quantity = 0;
    bool buy = false;
    template <class Ar>
    void serialize(Ar& ar) {
        ar(id, symbol, price, quantity, buy);
    }
};

void BM_codec_small_struct(benchmark::State& state) {
    const Order order{42, "ACME", 101.25, 300, true};
    std::vector<std::byte> message;
    for (auto _ : state) {
        message.clear();
        mproc::encode_into(message, order);
        auto out = mproc::decode<Order>(message);
        benchmark::DoNotOptimize(out.id);
    }
}
BENCHMARK(BM_codec_small_struct);

void BM_codec_map_string_int(benchmark::State& state) {
    std::map<std::string, int> m;
    for (int i = 0; i < state.range(0); ++i) m["key_" + std::to_string(i)] = i;
    std::vector<std::byte> message;
    for (auto _ : state) {
        message.clear();
        mproc::encode_into(message, m);
        auto out = mproc::decode<std::map<std::string, int>>(message);
        benchmark::DoNotOptimize(out.size());
    }
    state.SetItemsProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_codec_map_string_int)->Arg(1000);

}  // namespace

BENCHMARK_MAIN();
