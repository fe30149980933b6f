// Picks the next token from logits: repetition penalty, then temperature, top-k, top-p and min-p (the order
// of Hugging Face's logits processors), then a draw from a seeded generator so runs are reproducible.
#pragma once
#include <cstdint>
#include <vector>

namespace franken {

struct SamplerParams {
    float temperature = 0.8f;        // <= 0: greedy (argmax)
    int top_k = 40;                  // 0: off
    float top_p = 0.95f;             // 1: off
    float min_p = 0.05f;             // 0: off; drops tokens below min_p * p(best)
    float repetition_penalty = 1.0f; // 1: off; divides positive logits (multiplies negative) of recent tokens
    int repeat_last_n = 64;          // how many recent tokens the penalty looks at
    uint64_t seed = 0;
};

class Sampler {
public:
    explicit Sampler(const SamplerParams& p);
    // history: tokens so far (prompt and generated), for the repetition penalty.
    // draft >= 0: speculative decoding's check of a drafted token (a draft that proposes one token, as prompt lookup
    // and greedy drafting do): `draft` is returned with probability p(draft), else a draw from p without it,
    // renormalized. Together that is one draw from p, so the output's distribution is that of plain sampling
    // (greedy: the argmax, whatever the draft).
    int sample(const float* logits, int n_vocab, const int32_t* history, int n_history, int draft = -1);
    const SamplerParams& params() const { return p_; }

private:
    double next_uniform();  // in [0, 1)

    SamplerParams p_;
    uint64_t state_;
    std::vector<float> work_;
    std::vector<int> ids_;
    std::vector<double> prob_;
    std::vector<float> weights_;
};

}  // namespace franken
