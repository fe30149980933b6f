// A persistent thread pool for data-parallel loops. The calling thread works as thread 0; workers spin
// briefly between jobs (a decode step dispatches hundreds of small loops, so waking must cost ~1 us),
// then sleep on a condition variable so an idle model burns no CPU. Given a CPU list, thread t runs only on
// cpus[t % size] (a big.LITTLE board's big cores, say): pinned threads keep their caches and never share a core.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

namespace franken {

class ThreadPool {
public:
    // `cpus`: empty, or the CPU each thread is pinned to (thread t on cpus[t % cpus.size()]); the thread that calls
    // parallel_for is thread 0, pinned to cpus[0] on its first call. The pool gives that thread its former CPUs back
    // when it is destroyed on it (another thread cannot safely touch a thread that may have exited).
    explicit ThreadPool(int n_threads, std::vector<int> cpus = {});
    ~ThreadPool();
    ThreadPool(const ThreadPool&) = delete;
    ThreadPool& operator=(const ThreadPool&) = delete;

    int size() const { return n_threads_; }
    int64_t handoffs() const { return handoffs_; }  // parallel regions run so far (single-thread ones not)

    // Calls fn(begin, end, thread) on contiguous, disjoint chunks covering [0, n). The chunks (kGrain per thread)
    // are taken, not dealt: a thread that another process or thread has descheduled (a server's event loop, a busy
    // machine) leaves its share to the others instead of holding up the whole step, which on a 2-core device would
    // double it. A chunk's result never depends on which thread runs it; `thread` only selects scratch space.
    template <class F>
    void parallel_for(int n, F&& fn) {
        if (n <= 0) return;
        if (!cpus_.empty() && std::this_thread::get_id() != pinned_caller_) pin_caller();
        const int nt = n_threads_ < n ? n_threads_ : n;
        if (nt == 1) {
            fn(0, n, 0);
            return;
        }
        const int n_chunks = n < nt * kGrain ? n : nt * kGrain;
        std::atomic<int> next{0};
        auto take = [&](int t) {
            for (int c; (c = next.fetch_add(1, std::memory_order_relaxed)) < n_chunks;) {
                const int b = static_cast<int>(static_cast<int64_t>(n) * c / n_chunks);
                const int e = static_cast<int>(static_cast<int64_t>(n) * (c + 1) / n_chunks);
                fn(b, e, t);
            }
        };
        run(&take, [](void* c, int t) { (*static_cast<decltype(take)*>(c))(t); });
    }

private:
    static constexpr int kGrain = 4;
    void run(void* ctx, void (*call)(void*, int));
    void worker(int t);
    void pin_caller();

    int n_threads_;
    int64_t handoffs_ = 0;  // touched only by the calling thread
    std::vector<int> cpus_;
    std::thread::id pinned_caller_;  // the calling thread last pinned to cpus_[0]
    std::vector<unsigned char> caller_mask_;  // its CPU mask before (a cpu_set_t's bytes; empty where unknown)
    std::vector<std::thread> threads_;
    // The current job, published by bumping generation_.
    void* job_ctx_ = nullptr;
    void (*job_call_)(void*, int) = nullptr;
    std::atomic<uint64_t> generation_{0};
    std::atomic<int> pending_{0};
    std::atomic<int> sleepers_{0};
    std::atomic<bool> stop_{false};
    std::mutex mu_;
    std::condition_variable cv_;
};

// Physical cores of this machine (the default thread count): SMT siblings share the SIMD units.
int physical_cores();

}  // namespace franken
