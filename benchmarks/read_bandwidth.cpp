// The read-bandwidth ceiling of this machine for a buffer of a given size: every
// thread sums its own contiguous slice with a vectorisable loop, as a bandwidth-
// bound norm pass would at best. No torch; bench_cpu.py compiles and runs it.
//
// Usage: read_bandwidth BYTES THREADS REPEATS
// Prints "median_gbps X" and "checksum Y" (the checksum keeps the loads alive).

#include <algorithm>
#include <barrier>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

// Independent accumulators so the adds never wait on each other; the compiler
// turns the inner loop into wide vector loads and adds.
constexpr int kAccumulators = 16;

uint64_t sum_slice(const uint64_t* data, int64_t n) {
  uint64_t acc[kAccumulators] = {};
  int64_t i = 0;
  for (; i + kAccumulators <= n; i += kAccumulators) {
    for (int k = 0; k < kAccumulators; ++k) acc[k] += data[i + k];
  }
  uint64_t total = 0;
  for (; i < n; ++i) total += data[i];
  for (uint64_t a : acc) total += a;
  return total;
}

struct Slice {
  int64_t begin;
  int64_t end;
};

Slice slice_of(int64_t words, int threads, int t) {
  const int64_t q = words / threads;
  const int64_t r = words % threads;
  const int64_t begin = t * q + std::min<int64_t>(t, r);
  return {begin, begin + q + (t < r ? 1 : 0)};
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s BYTES THREADS REPEATS\n", argv[0]);
    return 2;
  }
  const int64_t words = std::atoll(argv[1]) / static_cast<int64_t>(sizeof(uint64_t));
  const int threads = std::max(1, std::atoi(argv[2]));
  const int repeats = std::max(1, std::atoi(argv[3]));
  const int64_t bytes = words * static_cast<int64_t>(sizeof(uint64_t));

  // Uninitialised on purpose: each thread first-touches its own slice below.
  std::unique_ptr<uint64_t[]> buffer(new uint64_t[words]);
  std::vector<uint64_t> sums(threads);
  std::vector<double> seconds;
  std::barrier start(threads);
  std::barrier stop(threads);

  // Thread 0 is this thread; it times each repeat from the start to the stop barrier.
  auto work = [&](int t) {
    const Slice s = slice_of(words, threads, t);
    for (int64_t i = s.begin; i < s.end; ++i) buffer[i] = static_cast<uint64_t>(i);
    // One untimed pass warms the page tables and caches like the benchmark's warm-up.
    for (int r = -1; r < repeats; ++r) {
      start.arrive_and_wait();
      const auto t0 = Clock::now();
      sums[t] += sum_slice(buffer.get() + s.begin, s.end - s.begin);
      stop.arrive_and_wait();
      if (t == 0 && r >= 0) seconds.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
    }
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back(work, t);
  work(0);
  for (auto& th : pool) th.join();

  std::sort(seconds.begin(), seconds.end());
  const double median = seconds[seconds.size() / 2];
  uint64_t checksum = 0;
  for (uint64_t s : sums) checksum += s;
  std::printf("median_gbps %.3f\nchecksum %llu\n", bytes / median / 1e9,
              static_cast<unsigned long long>(checksum));
  return 0;
}
