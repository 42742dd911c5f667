/// \file model.hpp
/// \brief MlpStage: one pipeline stage of a block MLP (optionally a character-level MLP language
/// model), forward and backward as Kokkos kernels.
///
/// The model is `blocks` blocks  h <- act(LN?(W h + b))  of width `hidden`, then a linear head with
/// softmax cross-entropy. With token inputs (the char LM) the first stage starts with an embedding
/// table: x = concat(E[t_1], ..., E[t_context]) (Bengio et al. 2003). Stage s of P owns blocks
/// [s L/P, (s+1) L/P); the last stage also owns the head, stage 0 the embedding.
///
/// Parameters are initialised per *global* block from the seed, so the same network results for
/// every P: that is what lets P = 1 and P = 8 be compared, and the synchronous schedule be checked
/// bit for bit against plain training.
///
/// Host execution spaces only: activations travel between stages as host buffers. Kernels are
/// written for any host space; the executor runs each stage on Kokkos::Serial in its own thread
/// (Kokkos 3.4's OpenMP backend must not be entered from several threads at once).
#pragma once

#include "data.hpp"

#include <delayopt/delayopt.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

namespace pipeline {

enum class Activation { tanh, relu };

/// Shape and initialisation of the whole network (every stage gets the same spec).
struct MlpSpec {
  int input_dim = 64;  ///< dense input width (ignored with token inputs)
  int vocab = 0;       ///< > 0: token inputs through an embedding table with this many rows
  int context = 0;     ///< tokens per sample (token inputs)
  int embed = 16;      ///< embedding width (token inputs)
  int hidden = 64;
  int blocks = 8;
  int classes = 10;
  int batch = 32;  ///< samples per microbatch
  bool layer_norm = false;
  Activation activation = Activation::tanh;
  std::uint64_t seed = 1;  ///< initialisation and data sampling

  int first_width() const { return vocab > 0 ? context * embed : input_dim; }

  void validate(int stages) const {
    auto need = [](bool ok, const std::string& what) {
      if (!ok) throw std::invalid_argument("MlpSpec: " + what);
    };
    need(stages >= 1, "need at least one stage");
    need(blocks >= stages && blocks % stages == 0, "blocks (" + std::to_string(blocks) +
                                                       ") must be a multiple of the number of stages (" +
                                                       std::to_string(stages) + ")");
    need(hidden > 0 && batch > 0 && classes > 1, "hidden, batch must be positive and classes > 1");
    need(vocab > 0 ? (context > 0 && embed > 0) : input_dim > 0, "input width must be positive");
  }
};

/// What one stage's backward pass needs from its forward pass, for one microbatch in flight.
template <class T, class Space>
struct MlpTape {
  using memory_space = typename Space::memory_space;
  using Mat = Kokkos::View<T**, Kokkos::LayoutRight, memory_space>;
  Mat x0;                                                         ///< the stage's input (B x width)
  std::vector<Mat> h;                                             ///< each block's output (B x hidden)
  std::vector<Mat> xhat;                                          ///< layer norm: normalised pre-activations
  std::vector<Kokkos::View<T*, memory_space>> rstd;               ///< layer norm: 1 / std per row
  Mat probs;                                                      ///< last stage: softmax of the logits (B x classes)
  Kokkos::View<int**, Kokkos::LayoutRight, memory_space> tokens;  ///< stage 0, token inputs
  Kokkos::View<int*, memory_space> labels;                        ///< last stage
  Kokkos::View<double*, memory_space> row_loss;                   ///< last stage
};

template <class T, class Space>
class MlpStage {
  static_assert(delayopt::compat::is_host_space_v<Space>,
                "pipeline::MlpStage: activations travel as host buffers; use a host execution space");

 public:
  using value_type = T;
  using execution_space = Space;
  using Params = delayopt::ParamSet<T, Space>;
  using Tape = MlpTape<T, Space>;
  using Mat = typename Tape::Mat;

  /// Allocates parameters and scratch (call from the thread that initialised Kokkos).
  MlpStage(const MlpSpec& spec, int stage, int stages, std::shared_ptr<const Dataset> data)
      : spec_(spec), stage_(stage), stages_(stages), data_(std::move(data)) {
    spec_.validate(stages_);
    if (stage < 0 || stage >= stages) throw std::invalid_argument("MlpStage: stage index out of range");
    if (!data_) throw std::invalid_argument("MlpStage: no data set");
    const int per = spec_.blocks / stages_;
    first_block_ = stage * per;
    nblocks_ = per;
    const auto H = static_cast<std::size_t>(spec_.hidden);
    std::vector<delayopt::BlockShape> shapes;
    if (has_embedding())
      shapes.push_back({"emb", 2, static_cast<std::size_t>(spec_.vocab), static_cast<std::size_t>(spec_.embed)});
    for (int j = 0; j < nblocks_; ++j) {
      const std::string k = "blk" + std::to_string(first_block_ + j);
      shapes.push_back({k + ".W", 2, H, static_cast<std::size_t>(block_in(j))});
      shapes.push_back({k + ".b", 1, H});
      if (spec_.layer_norm) {
        shapes.push_back({k + ".ln_g", 1, H});
        shapes.push_back({k + ".ln_b", 1, H});
      }
    }
    if (is_last()) {
      shapes.push_back({"head.W", 2, static_cast<std::size_t>(spec_.classes), H});
      shapes.push_back({"head.b", 1, static_cast<std::size_t>(spec_.classes)});
    }
    params_ = Params(shapes, "pipeline::params");
    initialise();
    const auto B = static_cast<std::size_t>(spec_.batch);
    d_[0] = Mat("pipeline::d0", B, H);
    d_[1] = Mat("pipeline::d1", B, H);
    dx0_ = Mat("pipeline::dx0", B, static_cast<std::size_t>(stage_in_width()));
    if (is_last()) dlogits_ = Mat("pipeline::dlogits", B, static_cast<std::size_t>(spec_.classes));
  }

  const MlpSpec& spec() const { return spec_; }
  int stage() const { return stage_; }
  int stages() const { return stages_; }
  bool is_first() const { return stage_ == 0; }
  bool is_last() const { return stage_ == stages_ - 1; }
  Params& params() { return params_; }
  const Params& params() const { return params_; }

  /// Elements received from the previous stage per microbatch (0 on stage 0).
  std::size_t input_size() const { return is_first() ? 0 : static_cast<std::size_t>(spec_.batch * spec_.hidden); }
  /// Elements sent to the next stage per microbatch (0 on the last stage).
  std::size_t output_size() const { return is_last() ? 0 : static_cast<std::size_t>(spec_.batch * spec_.hidden); }

  /// Storage for one microbatch in flight.
  Tape make_tape() const {
    Tape t;
    const auto B = static_cast<std::size_t>(spec_.batch), H = static_cast<std::size_t>(spec_.hidden);
    t.x0 = Mat("pipeline::tape.x0", B, static_cast<std::size_t>(stage_in_width()));
    for (int j = 0; j < nblocks_; ++j) {
      t.h.emplace_back("pipeline::tape.h", B, H);
      if (spec_.layer_norm) {
        t.xhat.emplace_back("pipeline::tape.xhat", B, H);
        t.rstd.emplace_back("pipeline::tape.rstd", B);
      }
    }
    if (has_embedding())
      t.tokens = decltype(t.tokens)("pipeline::tape.tokens", B, static_cast<std::size_t>(spec_.context));
    if (is_last()) {
      t.probs = Mat("pipeline::tape.probs", B, static_cast<std::size_t>(spec_.classes));
      t.labels = decltype(t.labels)("pipeline::tape.labels", B);
      t.row_loss = decltype(t.row_loss)("pipeline::tape.row_loss", B);
    }
    return t;
  }

  /// Forward pass of microbatch `m` with weights `w` (the current ones or a stashed version).
  /// Reads `in` (from the previous stage) or the data set (stage 0), writes `out` (for the next
  /// stage) and `tape`. Returns the microbatch's mean cross-entropy on the last stage, else NaN.
  double forward(const Space& space, const Params& w, std::int64_t m, std::span<const T> in, Tape& tape,
                 std::span<T> out) {
    check_size("forward input", in.size(), input_size());
    check_size("forward output", out.size(), output_size());
    if (is_first())
      load_inputs(space, w, m, tape);
    else
      std::memcpy(tape.x0.data(), in.data(), in.size_bytes());
    Mat x = tape.x0;
    std::size_t p = has_embedding() ? 1 : 0;
    for (int j = 0; j < nblocks_; ++j) {
      linear(space, x, w.matrix(p), w.flat(p + 1), tape.h[static_cast<std::size_t>(j)]);
      if (spec_.layer_norm)
        norm_act(space, tape.h[j], tape.xhat[j], tape.rstd[j], w.flat(p + 2), w.flat(p + 3));
      else
        act(space, tape.h[j]);
      x = tape.h[static_cast<std::size_t>(j)];
      p += spec_.layer_norm ? 4 : 2;
    }
    if (!is_last()) {
      delayopt::compat::fence(space, "pipeline::forward");
      std::memcpy(out.data(), x.data(), out.size_bytes());
      return std::nan("");
    }
    for (int b = 0; b < spec_.batch; ++b) tape.labels(b) = data_->label(data_->sample(spec_.seed, m, b));
    linear(space, x, w.matrix(p), w.flat(p + 1), tape.probs);
    softmax_xent(space, tape);
    delayopt::compat::fence(space, "pipeline::forward");
    double loss = 0;
    for (int b = 0; b < spec_.batch; ++b) loss += tape.row_loss(b);
    return loss / spec_.batch;
  }

  /// Backward pass: parameter gradients into `grads` (added to them when `accumulate`), the
  /// gradient w.r.t. the stage input into `grad_in` (not on stage 0). `grad_out` comes from the
  /// next stage; the last stage starts from its own loss, scaled by `loss_scale`.
  void backward(const Space& space, const Params& w, const Tape& tape, std::span<const T> grad_out, Params& grads,
                std::span<T> grad_in, T loss_scale, bool accumulate) {
    check_size("backward input", grad_out.size(), output_size());
    check_size("backward output", grad_in.size(), input_size());
    Params::require_same_shapes(params_, grads, "pipeline::MlpStage::backward", "params", "grads");
    const int step = spec_.layer_norm ? 4 : 2;
    std::size_t p = (has_embedding() ? 1 : 0) + static_cast<std::size_t>(nblocks_ * step);  // head or end
    Mat dcur = d_[0], dnext = d_[1];
    if (is_last()) {
      xent_grad(space, tape, loss_scale);
      const Mat x = tape.h.back();
      linear_grads(space, dlogits_, x, grads.matrix(p), grads.flat(p + 1), accumulate);
      linear_dx(space, dlogits_, w.matrix(p), dcur);
    } else {
      std::memcpy(dcur.data(), grad_out.data(), grad_out.size_bytes());
    }
    for (int j = nblocks_ - 1; j >= 0; --j) {
      p -= static_cast<std::size_t>(step);
      const Mat x = j > 0 ? tape.h[static_cast<std::size_t>(j - 1)] : tape.x0;
      act_grad(space, dcur, tape.h[static_cast<std::size_t>(j)]);
      if (spec_.layer_norm)
        norm_grad(space, dcur, tape.xhat[j], tape.rstd[j], w.flat(p + 2), grads.flat(p + 2), grads.flat(p + 3),
                  accumulate);
      linear_grads(space, dcur, x, grads.matrix(p), grads.flat(p + 1), accumulate);
      const bool need_dx = j > 0 || !is_first() || has_embedding();
      if (need_dx) {
        Mat dx = j > 0 ? dnext : dx0_;
        linear_dx(space, dcur, w.matrix(p), dx);
        std::swap(dcur, dnext);
      }
    }
    if (has_embedding()) embedding_grad(space, tape, grads.matrix(0), accumulate);
    delayopt::compat::fence(space, "pipeline::backward");
    if (!is_first()) std::memcpy(grad_in.data(), dx0_.data(), grad_in.size_bytes());
  }

 private:
  using CMat = Kokkos::View<const T**, Kokkos::LayoutRight, typename Space::memory_space,
                            Kokkos::MemoryTraits<Kokkos::Unmanaged>>;
  using UMat =
      Kokkos::View<T**, Kokkos::LayoutRight, typename Space::memory_space, Kokkos::MemoryTraits<Kokkos::Unmanaged>>;
  using UVec = typename Params::flat_view;

  bool has_embedding() const { return is_first() && spec_.vocab > 0; }
  int stage_in_width() const { return is_first() ? spec_.first_width() : spec_.hidden; }
  int block_in(int j) const { return (is_first() && j == 0) ? spec_.first_width() : spec_.hidden; }

  static void check_size(const char* what, std::size_t got, std::size_t want) {
    if (got != want)
      throw std::invalid_argument(std::string("pipeline::MlpStage: ") + what + " has " + std::to_string(got) +
                                  " elements, expected " + std::to_string(want));
  }

  template <class F>
  static void launch(const Space& space, const char* label, int n, const F& f) {
    Kokkos::parallel_for(label, Kokkos::RangePolicy<Space>(space, 0, n), f);
  }

  /// Xavier-uniform weights (He for ReLU), zero biases, unit LN gains; one stream per global block.
  void initialise() {
    std::size_t p = 0;
    auto fill = [&](std::size_t idx, std::uint64_t stream, double bound) {
      detail::Rng rng(spec_.seed * 0x100000001b3ull + stream);
      auto v = params_.flat(idx);
      for (std::size_t i = 0; i < v.size(); ++i) v(i) = static_cast<T>(bound * (2 * rng.uniform() - 1));
    };
    if (has_embedding()) fill(p++, 1000, 1.0);
    for (int j = 0; j < nblocks_; ++j) {
      const double fan_in = block_in(j), fan_out = spec_.hidden;
      const double bound =
          spec_.activation == Activation::relu ? std::sqrt(6.0 / fan_in) : std::sqrt(6.0 / (fan_in + fan_out));
      fill(p, static_cast<std::uint64_t>(first_block_ + j), bound);
      p += 2;  // bias stays 0
      if (spec_.layer_norm) {
        auto gain = params_.flat(p);
        for (std::size_t i = 0; i < gain.size(); ++i) gain(i) = T(1);
        p += 2;
      }
    }
    if (is_last()) fill(p, 2000, std::sqrt(6.0 / (spec_.hidden + spec_.classes)));
  }

  // The kernels below are not part of the stage's interface. They are public only because nvcc
  // rejects an extended __host__ __device__ lambda (KOKKOS_LAMBDA with a CUDA Kokkos) in a private
  // or protected member function.
 public:
  /// Stage 0: gathers the microbatch's inputs (pixel rows, or token embeddings) into tape.x0.
  void load_inputs(const Space& space, const Params& w, std::int64_t m, Tape& tape) const {
    const int B = spec_.batch;
    if (!has_embedding()) {
      const int F = spec_.input_dim;
      if (data_->features != F) throw std::invalid_argument("pipeline::MlpStage: data width differs from input_dim");
      for (int b = 0; b < B; ++b) {
        const std::size_t s = data_->sample(spec_.seed, m, b);
        std::copy_n(data_->x.data() + s * static_cast<std::size_t>(F), F, &tape.x0(b, 0));
      }
      return;
    }
    const int C = spec_.context, E = spec_.embed;
    for (int b = 0; b < B; ++b) {
      const std::size_t s = data_->sample(spec_.seed, m, b);
      for (int k = 0; k < C; ++k) tape.tokens(b, k) = data_->tokens[s + static_cast<std::size_t>(k)];
    }
    const auto tok = tape.tokens;
    const auto x0 = tape.x0;
    const UMat emb = w.matrix(0);
    launch(
        space, "pipeline::embed", B, KOKKOS_LAMBDA(const int b) {
          for (int k = 0; k < C; ++k)
            for (int e = 0; e < E; ++e) x0(b, k * E + e) = emb(tok(b, k), e);
        });
  }

  /// Y = X W^T + b.
  static void linear(const Space& space, const CMat X, const CMat W, const UVec bias, const UMat Y) {
    const int in = static_cast<int>(X.extent(1)), out = static_cast<int>(W.extent(0));
    launch(
        space, "pipeline::linear", static_cast<int>(X.extent(0)) * out, KOKKOS_LAMBDA(const int idx) {
          const int b = idx / out, o = idx % out;
          T acc = bias(o);
          for (int i = 0; i < in; ++i) acc += X(b, i) * W(o, i);
          Y(b, o) = acc;
        });
  }

  // Called inside kernels, so callable on a device too.
  KOKKOS_INLINE_FUNCTION static T activate(T z, Activation a) {
    return a == Activation::tanh ? std::tanh(z) : (z > 0 ? z : T(0));
  }
  KOKKOS_INLINE_FUNCTION static T derivative(T h, Activation a) {
    return a == Activation::tanh ? T(1) - h * h : (h > 0 ? T(1) : T(0));
  }

  void act(const Space& space, const UMat H) const {
    const int n = static_cast<int>(H.extent(1));
    const Activation a = spec_.activation;
    launch(
        space, "pipeline::act", static_cast<int>(H.extent(0)), KOKKOS_LAMBDA(const int b) {
          for (int o = 0; o < n; ++o) H(b, o) = activate(H(b, o), a);
        });
  }

  /// H <- act(LN(H) g + beta), keeping the normalised values and 1/std for the backward pass.
  void norm_act(const Space& space, const UMat H, const UMat xhat,
                const Kokkos::View<T*, typename Space::memory_space> rstd, const UVec g, const UVec beta) const {
    const int n = static_cast<int>(H.extent(1));
    const Activation a = spec_.activation;
    launch(
        space, "pipeline::norm_act", static_cast<int>(H.extent(0)), KOKKOS_LAMBDA(const int b) {
          double mean = 0, var = 0;
          for (int o = 0; o < n; ++o) mean += H(b, o);
          mean /= n;
          for (int o = 0; o < n; ++o) var += (H(b, o) - mean) * (H(b, o) - mean);
          const T r = static_cast<T>(1.0 / std::sqrt(var / n + 1e-5));
          rstd(b) = r;
          for (int o = 0; o < n; ++o) {
            const T xh = (H(b, o) - static_cast<T>(mean)) * r;
            xhat(b, o) = xh;
            H(b, o) = activate(xh * g(o) + beta(o), a);
          }
        });
  }

  /// Softmax in place over the logits, per-row cross-entropy against tape.labels.
  static void softmax_xent(const Space& space, const Tape& tape) {
    const UMat P = tape.probs;
    const auto y = tape.labels;
    const auto loss = tape.row_loss;
    const int C = static_cast<int>(P.extent(1));
    launch(
        space, "pipeline::softmax_xent", static_cast<int>(P.extent(0)), KOKKOS_LAMBDA(const int b) {
          T mx = P(b, 0);
          for (int c = 1; c < C; ++c) mx = P(b, c) > mx ? P(b, c) : mx;  // std::max is host-only under nvcc
          const T zy = P(b, y(b)) - mx;
          T sum = 0;
          for (int c = 0; c < C; ++c) sum += (P(b, c) = std::exp(P(b, c) - mx));
          for (int c = 0; c < C; ++c) P(b, c) /= sum;
          loss(b) = static_cast<double>(std::log(sum) - zy);
        });
  }

  /// dlogits = (softmax - onehot) * scale / B.
  void xent_grad(const Space& space, const Tape& tape, T scale) const {
    const UMat P = tape.probs, D = dlogits_;
    const auto y = tape.labels;
    const int C = static_cast<int>(P.extent(1));
    const T s = scale / static_cast<T>(P.extent(0));
    launch(
        space, "pipeline::xent_grad", static_cast<int>(P.extent(0)), KOKKOS_LAMBDA(const int b) {
          for (int c = 0; c < C; ++c) D(b, c) = (P(b, c) - (c == y(b) ? T(1) : T(0))) * s;
        });
  }

  /// D <- D * act'(H) (D holds dL/dH on entry).
  void act_grad(const Space& space, const UMat D, const CMat H) const {
    const int n = static_cast<int>(H.extent(1));
    const Activation a = spec_.activation;
    launch(
        space, "pipeline::act_grad", static_cast<int>(H.extent(0)), KOKKOS_LAMBDA(const int b) {
          for (int o = 0; o < n; ++o) D(b, o) *= derivative(H(b, o), a);
        });
  }

  /// Layer-norm backward: gain/bias gradients, then D <- dL/d(pre-norm) in place.
  static void norm_grad(const Space& space, const UMat D, const CMat xhat,
                        const Kokkos::View<const T*, typename Space::memory_space> rstd, const UVec g, const UVec dg,
                        const UVec dbeta, bool acc) {
    const int B = static_cast<int>(D.extent(0)), n = static_cast<int>(D.extent(1));
    launch(
        space, "pipeline::norm_param_grad", n, KOKKOS_LAMBDA(const int o) {
          T sg = acc ? dg(o) : T(0), sb = acc ? dbeta(o) : T(0);
          for (int b = 0; b < B; ++b) sg += D(b, o) * xhat(b, o), sb += D(b, o);
          dg(o) = sg;
          dbeta(o) = sb;
        });
    launch(
        space, "pipeline::norm_grad", B, KOKKOS_LAMBDA(const int b) {
          T m1 = 0, m2 = 0;
          for (int o = 0; o < n; ++o) m1 += D(b, o) * g(o), m2 += D(b, o) * g(o) * xhat(b, o);
          m1 /= static_cast<T>(n);
          m2 /= static_cast<T>(n);
          for (int o = 0; o < n; ++o) D(b, o) = rstd(b) * (D(b, o) * g(o) - m1 - xhat(b, o) * m2);
        });
  }

  /// dW (+)= D^T X, db (+)= column sums of D. One work item per output row: no write conflicts.
  static void linear_grads(const Space& space, const CMat D, const CMat X, const UMat dW, const UVec db, bool acc) {
    const int B = static_cast<int>(D.extent(0)), in = static_cast<int>(X.extent(1));
    launch(
        space, "pipeline::linear_grads", static_cast<int>(dW.extent(0)), KOKKOS_LAMBDA(const int o) {
          if (!acc)
            for (int i = 0; i < in; ++i) dW(o, i) = 0;
          T sb = acc ? db(o) : T(0);
          for (int b = 0; b < B; ++b) {
            const T d = D(b, o);
            sb += d;
            for (int i = 0; i < in; ++i) dW(o, i) += d * X(b, i);
          }
          db(o) = sb;
        });
  }

  /// dX = D W.
  static void linear_dx(const Space& space, const CMat D, const CMat W, const UMat dX) {
    const int out = static_cast<int>(W.extent(0)), in = static_cast<int>(W.extent(1));
    launch(
        space, "pipeline::linear_dx", static_cast<int>(D.extent(0)), KOKKOS_LAMBDA(const int b) {
          for (int i = 0; i < in; ++i) dX(b, i) = 0;
          for (int o = 0; o < out; ++o) {
            const T d = D(b, o);
            for (int i = 0; i < in; ++i) dX(b, i) += d * W(o, i);
          }
        });
  }

  /// dE[t] (+)= dx0 slices. One work item per embedding column, so rows repeated in the batch
  /// never race and the sum order is fixed.
  void embedding_grad(const Space& space, const Tape& tape, const UMat dE, bool acc) const {
    const int B = spec_.batch, C = spec_.context, E = spec_.embed, V = spec_.vocab;
    const auto tok = tape.tokens;
    const UMat dx0 = dx0_;
    launch(
        space, "pipeline::embedding_grad", E, KOKKOS_LAMBDA(const int e) {
          if (!acc)
            for (int v = 0; v < V; ++v) dE(v, e) = 0;
          for (int b = 0; b < B; ++b)
            for (int k = 0; k < C; ++k) dE(tok(b, k), e) += dx0(b, k * E + e);
        });
  }

 private:
  MlpSpec spec_;
  int stage_ = 0, stages_ = 1, first_block_ = 0, nblocks_ = 0;
  std::shared_ptr<const Dataset> data_;
  Params params_;
  Mat d_[2];     ///< backward ping-pong buffers (B x hidden)
  Mat dx0_;      ///< gradient w.r.t. the stage input
  Mat dlogits_;  ///< last stage
};

}  // namespace pipeline
