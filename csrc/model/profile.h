// Where a forward pass spends its time, stage by stage (FRANKEN_PROFILE=1): for finding the per-token overhead that
// a decode step's matrix products do not explain. Off by default; when on, each stage costs two clock reads.
#pragma once
#include <chrono>
#include <cstdint>
#include <string>

namespace franken {

class Profile {
public:
    enum Stage { kEmbed, kNorm, kQKV, kRopeStore, kAttention, kAttnOut, kGateUp, kSwiglu, kDown, kResidual, kOutput,
                 kNumStages };

    bool on() const { return on_; }
    void enable() { on_ = true; }
    void count_pass(int rows) {
        ++passes_;
        rows_ += rows;
    }

    // Times one stage for as long as it lives (nothing when the profile is off).
    class Scope {
    public:
        Scope(Profile& p, Stage s) : p_(p.on_ ? &p : nullptr), s_(s) {
            if (p_) t0_ = std::chrono::steady_clock::now();
        }
        ~Scope() {
            if (p_) p_->seconds_[s_] += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
        }
        Scope(const Scope&) = delete;
        Scope& operator=(const Scope&) = delete;

    private:
        Profile* p_;
        Stage s_;
        std::chrono::steady_clock::time_point t0_;
    };

    // A table: per stage the total milliseconds, microseconds per pass and share; then the thread-pool hand-offs
    // (`handoffs`: the pool's parallel regions so far) per pass.
    std::string report(int64_t handoffs) const;

private:
    bool on_ = false;
    double seconds_[kNumStages] = {};
    int64_t passes_ = 0, rows_ = 0;
};

}  // namespace franken
