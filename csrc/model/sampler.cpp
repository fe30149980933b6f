#include "sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "../kernels/kernels.h"
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

int Sampler::sample(const float* logits, int n_vocab, const int32_t* history, int n_history, int draft) {
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

    // Candidates sorted by logit, best first. Top-k bounds how many need sorting; without it only the tokens that
    // can survive min-p and top-p are sorted (a threshold on the logit, lowered until the tokens above it hold the
    // top-p mass), never the whole vocabulary: sorting 49k logits per token would cost more than a decode step.
    const float best = *std::max_element(work_.begin(), work_.end());
    auto by_logit = [&](int a, int b) { return work_[a] > work_[b] || (work_[a] == work_[b] && a < b); };
    const float inv_t = 1.f / p_.temperature;
    auto weight = [&](int i) { return static_cast<double>(std::exp((work_[i] - best) * inv_t)); };
    std::vector<double>& prob = prob_;  // kept across calls: no allocation per token
    ids_.clear();
    int k = n_vocab;
    if (p_.top_k > 0 && p_.top_k < n_vocab) {  // softmax at temperature over the k best
        k = p_.top_k;
        ids_.resize(n_vocab);
        std::iota(ids_.begin(), ids_.end(), 0);
        std::partial_sort(ids_.begin(), ids_.begin() + k, ids_.end(), by_logit);
        ids_.resize(k);
        prob.resize(k);
        double sum = 0;
        for (int i = 0; i < k; ++i) sum += prob[i] = weight(ids_[i]);
        for (double& pr : prob) pr /= sum;
    } else {
        // Each token's exp((logit - best) / T), computed once with the vectorized exp of the kernel table (the
        // attention softmax's): over 49k tokens per draw, libm's exp would cost a tenth of a decode step.
        std::vector<float>& w = weights_;
        w.resize(n_vocab);
        for (int i = 0; i < n_vocab; ++i) w[i] = (work_[i] - best) * inv_t;
        const double total = kernels().exp_sum(w.data(), n_vocab, 0.f);  // the softmax denominator
        // min-p keeps p >= min_p * p(best), i.e. logit >= best + T ln(min_p).
        const float floor = p_.min_p > 0.f ? best + p_.temperature * std::log(p_.min_p) : -std::numeric_limits<float>::infinity();
        if (p_.top_p >= 1.f && !(p_.min_p > 0.f)) {
            // No filter at all: draw in vocabulary order, no sort needed.
            double mass = total;
            if (draft >= 0 && draft < n_vocab) {
                if (next_uniform() * total < w[draft]) return draft;
                mass -= w[draft];
            } else {
                draft = -1;
            }
            double u = next_uniform() * mass;
            for (int i = 0; i < n_vocab; ++i) {
                if (i == draft) continue;
                u -= w[i];
                if (u < 0) return i;
            }
            int top = -1;  // rounding left u >= 0: the likeliest token but the draft
            for (int i = 0; i < n_vocab; ++i)
                if (i != draft && (top < 0 || work_[i] > work_[top])) top = i;
            return top;
        }
        for (float step = 9.2f;; step += 9.2f) {  // thresholds e^-9.2 ~ 1e-4 apart in probability
            const float cut = std::max(floor, best - p_.temperature * step);
            ids_.clear();
            double mass = 0;
            for (int i = 0; i < n_vocab; ++i)
                if (work_[i] >= cut) {
                    ids_.push_back(i);
                    mass += w[i];
                }
            if (cut == floor || mass >= p_.top_p * total || step > 200.f) break;
        }
        std::sort(ids_.begin(), ids_.end(), by_logit);
        k = static_cast<int>(ids_.size());
        // Softmax at temperature over the whole vocabulary (top-p measures against all of it), for the candidates.
        prob.resize(k);
        for (int i = 0; i < k; ++i) prob[i] = w[ids_[i]] / total;
    }

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
    int skip = -1;  // the draft's place among the candidates (none: p(draft) = 0)
    if (draft >= 0) {
        for (int i = 0; i < keep; ++i)
            if (ids_[i] == draft) skip = i;
        if (next_uniform() * mass < (skip >= 0 ? prob[skip] : 0.0)) return draft;
        if (skip >= 0) mass -= prob[skip];
        if (skip >= 0 && keep == 1) return ids_[0];  // only by rounding: p(draft) = 1 is always accepted
    }
    double u = next_uniform() * mass;
    int last = -1;
    for (int i = 0; i < keep; ++i) {
        if (i == skip) continue;
        last = i;
        u -= prob[i];
        if (u < 0) return ids_[i];
    }
    return ids_[last];
}

}  // namespace franken
