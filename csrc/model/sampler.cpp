#include "sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "../runtime/error.h"

namespace franken {

Sampler::Sampler(const SamplerParams& p) : p_(p), state_(p.seed) {
    if (!(p.temperature >= 0) || !std::isfinite(p.temperature)) throw Error("temperature must be >= 0");
    if (p.top_k < 0) throw Error("top_k must be >= 0");
    if (!(p.top_p > 0 && p.top_p <= 1)) throw Error("top_p must be in (0, 1]");
    if (!(p.min_p >= 0 && p.min_p < 1)) throw Error("min_p must be in [0, 1)");
    if (!(p.repetition_penalty > 0) || !std::isfinite(p.repetition_penalty)) throw Error("repetition_penalty must be > 0");
    if (p.repeat_last_n < 0) throw Error("repeat_last_n must be >= 0");
}

// splitmix64: tiny, fast and the same on every platform (std:: distributions are not).
double Sampler::next_uniform() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return static_cast<double>(z >> 11) * (1.0 / 9007199254740992.0);
}

int Sampler::sample(const float* logits, int n_vocab, const int32_t* history, int n_history) {
    work_.assign(logits, logits + n_vocab);
    // A NaN (an overflow upstream) would break the ordering the sorts below rely on: it ranks last instead.
    for (float& l : work_)
        if (std::isnan(l)) l = -std::numeric_limits<float>::infinity();
    if (p_.repetition_penalty != 1.f && p_.repeat_last_n > 0) {
        const int from = std::max(0, n_history - p_.repeat_last_n);
        ids_.clear();
        for (int i = from; i < n_history; ++i)
            if (history[i] >= 0 && history[i] < n_vocab) ids_.push_back(history[i]);
        std::sort(ids_.begin(), ids_.end());
        ids_.erase(std::unique(ids_.begin(), ids_.end()), ids_.end());  // each token penalized once
        for (int id : ids_) work_[id] = work_[id] > 0 ? work_[id] / p_.repetition_penalty : work_[id] * p_.repetition_penalty;
    }
    if (p_.temperature <= 0.f)
        return static_cast<int>(std::max_element(work_.begin(), work_.end()) - work_.begin());

    // Candidates sorted by logit, best first; top-k bounds how many need sorting.
    ids_.resize(n_vocab);
    std::iota(ids_.begin(), ids_.end(), 0);
    const int k = (p_.top_k > 0 && p_.top_k < n_vocab) ? p_.top_k : n_vocab;
    auto by_logit = [&](int a, int b) { return work_[a] > work_[b] || (work_[a] == work_[b] && a < b); };
    std::partial_sort(ids_.begin(), ids_.begin() + k, ids_.end(), by_logit);
    ids_.resize(k);

    // Softmax at temperature over the candidates.
    std::vector<double>& prob = prob_;  // kept across calls: no allocation per token
    prob.resize(k);
    const double top = work_[ids_[0]];
    double sum = 0;
    for (int i = 0; i < k; ++i) sum += prob[i] = std::exp((work_[ids_[i]] - top) / p_.temperature);
    for (double& pr : prob) pr /= sum;

    // top-p: the smallest prefix whose mass reaches top_p; min-p: drop tokens far below the best.
    int keep = k;
    if (p_.top_p < 1.f) {
        double cum = 0;
        for (int i = 0; i < k; ++i) {
            cum += prob[i];
            if (cum >= p_.top_p) { keep = i + 1; break; }
        }
    }
    if (p_.min_p > 0.f) {
        const double floor = p_.min_p * prob[0];
        int m = 1;
        while (m < keep && prob[m] >= floor) ++m;
        keep = m;
    }
    double mass = 0;
    for (int i = 0; i < keep; ++i) mass += prob[i];
    double u = next_uniform() * mass;
    for (int i = 0; i < keep; ++i) {
        u -= prob[i];
        if (u < 0) return ids_[i];
    }
    return ids_[keep - 1];
}

}  // namespace franken
