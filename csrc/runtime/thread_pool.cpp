#include "thread_pool.h"

#include <algorithm>
#include <fstream>
#if defined(__linux__)
#include <pthread.h>
#include <sched.h>
#endif
#include <set>
#include <string>
#include <utility>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define FRANKEN_PAUSE() _mm_pause()
#elif defined(__aarch64__)
#define FRANKEN_PAUSE() asm volatile("yield")
#else
#define FRANKEN_PAUSE() ((void)0)
#endif

namespace franken {

namespace {
constexpr int kSpinIterations = 1 << 15;  // ~0.1-0.5 ms of polling before a worker sleeps
constexpr int kPauseBeforeYield = 1 << 10;  // then give the core away, in case it is oversubscribed

// One step of a busy wait: pause for a while, then yield so a descheduled peer can run.
inline void backoff(int spins) {
    if (spins < kPauseBeforeYield)
        FRANKEN_PAUSE();
    else
        std::this_thread::yield();
}
// Restrict the calling thread to one CPU, returning its mask before (empty where it cannot be read). The Python side
// has checked the CPU is one this process may use; if pinning still fails (a CPU taken offline since), the thread
// runs unpinned, which is slower, never wrong.
std::vector<unsigned char> pin_this_thread(int cpu) {
    std::vector<unsigned char> before;
#if defined(__linux__)
    if (cpu < 0 || cpu >= CPU_SETSIZE) return before;
    cpu_set_t set;
    if (pthread_getaffinity_np(pthread_self(), sizeof(set), &set) == 0) {
        const auto* bytes = reinterpret_cast<const unsigned char*>(&set);
        before.assign(bytes, bytes + sizeof(set));
    }
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
#else
    (void)cpu;
#endif
    return before;
}

void restore_this_thread(const std::vector<unsigned char>& mask) {
#if defined(__linux__)
    cpu_set_t set;
    if (mask.size() != sizeof(set)) return;
    std::copy(mask.begin(), mask.end(), reinterpret_cast<unsigned char*>(&set));
    pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
#else
    (void)mask;
#endif
}
}  // namespace

ThreadPool::ThreadPool(int n_threads, std::vector<int> cpus)
    : n_threads_(n_threads < 1 ? 1 : n_threads), cpus_(std::move(cpus)) {
    for (int t = 1; t < n_threads_; ++t) threads_.emplace_back([this, t] { worker(t); });
}

void ThreadPool::pin_caller() {
    // A second caller thread: the first keeps its pin (it may have exited); only the newest is given back its CPUs.
    caller_mask_ = pin_this_thread(cpus_[0]);
    pinned_caller_ = std::this_thread::get_id();
}

ThreadPool::~ThreadPool() {
    if (!caller_mask_.empty() && std::this_thread::get_id() == pinned_caller_) restore_this_thread(caller_mask_);
    {
        std::lock_guard<std::mutex> lock(mu_);
        stop_.store(true);
        generation_.fetch_add(1);
    }
    cv_.notify_all();
    for (auto& th : threads_) th.join();
}

void ThreadPool::run(void* ctx, void (*call)(void*, int)) {
    ++handoffs_;
    job_ctx_ = ctx;
    job_call_ = call;
    pending_.store(n_threads_ - 1);
    generation_.fetch_add(1);  // publishes the job (seq_cst)
    if (sleepers_.load() > 0) {
        std::lock_guard<std::mutex> lock(mu_);
        cv_.notify_all();
    }
    call(ctx, 0);
    for (int spins = 0; pending_.load(std::memory_order_acquire) > 0; ++spins) backoff(spins);
}

void ThreadPool::worker(int t) {
    if (!cpus_.empty()) pin_this_thread(cpus_[t % cpus_.size()]);  // its former mask is the process's: not kept
    uint64_t seen = 0;
    for (;;) {
        int spins = 0;
        while (generation_.load(std::memory_order_acquire) == seen && spins < kSpinIterations) backoff(spins++);
        if (generation_.load() == seen) {
            sleepers_.fetch_add(1);
            std::unique_lock<std::mutex> lock(mu_);
            cv_.wait(lock, [&] { return generation_.load() != seen; });
            sleepers_.fetch_sub(1);
        }
        seen = generation_.load();
        if (stop_.load()) return;
        job_call_(job_ctx_, t);
        pending_.fetch_sub(1, std::memory_order_release);
    }
}

int physical_cores() {
    // Count distinct (physical id, core id) pairs; fall back to the logical count.
    std::ifstream in("/proc/cpuinfo");
    std::set<std::pair<std::string, std::string>> cores;
    std::string line, phys = "0";
    while (std::getline(in, line)) {
        const auto colon = line.find(':');
        if (colon == std::string::npos) continue;
        const std::string key = line.substr(0, line.find_last_not_of(" \t", colon - 1) + 1);
        const std::string val = line.substr(colon + 1 < line.size() ? colon + 2 : colon + 1);
        if (key == "physical id") phys = val;
        if (key == "core id") cores.emplace(phys, val);
    }
    const int logical = static_cast<int>(std::thread::hardware_concurrency());
    if (cores.empty()) return logical > 0 ? logical : 1;
    const int n = static_cast<int>(cores.size());
    return (logical > 0 && n > logical) ? logical : n;
}

}  // namespace franken
