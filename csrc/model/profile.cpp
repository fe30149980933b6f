#include "profile.h"

#include <cstdio>

namespace franken {

std::string Profile::report(int64_t handoffs) const {
    static const char* const kNames[kNumStages] = {"embed",     "rmsnorm",   "q/k/v",    "rope+kv store",
                                                   "attention", "attn out",  "gate/up",  "swiglu",
                                                   "down",      "residual",  "output"};
    double total = 0;
    for (double s : seconds_) total += s;
    const double per = passes_ ? 1e6 / static_cast<double>(passes_) : 0.0;
    std::string out;
    char line[160];
    std::snprintf(line, sizeof line, "franken profile: %lld passes, %lld rows (%.2f per pass)\n",
                  static_cast<long long>(passes_), static_cast<long long>(rows_),
                  passes_ ? static_cast<double>(rows_) / static_cast<double>(passes_) : 0.0);
    out += line;
    std::snprintf(line, sizeof line, "  %-14s %10s %12s %7s\n", "stage", "total ms", "us per pass", "share");
    out += line;
    for (int s = 0; s < kNumStages; ++s) {
        std::snprintf(line, sizeof line, "  %-14s %10.1f %12.1f %6.1f%%\n", kNames[s], seconds_[s] * 1e3,
                      seconds_[s] * per, total > 0 ? 100.0 * seconds_[s] / total : 0.0);
        out += line;
    }
    std::snprintf(line, sizeof line, "  %-14s %10.1f %12.1f\n", "all", total * 1e3, total * per);
    out += line;
    std::snprintf(line, sizeof line, "  thread-pool hand-offs: %lld (%.1f per pass)\n", static_cast<long long>(handoffs),
                  passes_ ? static_cast<double>(handoffs) / static_cast<double>(passes_) : 0.0);
    out += line;
    return out;
}

}  // namespace franken
