// Tests of the pipeline executor (threads transport): measured staleness, the weights each pass
// really sees, bit-for-bit equivalence with plain training, failure shutdown.
// The MPI transport is tested by the driver tests in ../CMakeLists.txt (compare_transports.cmake).
#define CATCH_CONFIG_RUNNER
#if __has_include(<catch2/catch_all.hpp>)
#include <catch2/catch_all.hpp>
using Catch::Approx;
#define CONTAINS Catch::Matchers::ContainsSubstring
#else
#include <catch2/catch.hpp>
#define CONTAINS Catch::Matchers::Contains
#endif

#include "driver.hpp"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <unistd.h>

using namespace pipeline;

namespace {

// ---- A probe model: its only parameter is the stage's version, written by a probe optimizer ------
//
// The forward pass records which weight version it computed with, the backward pass which version
// it differentiated; the optimizer sets the weight to the number of updates applied. So the test
// sees what the executor actually handed to each pass, independently of the executor's counters.

struct ProbeLog {
  std::vector<long> forward_version;   // per microbatch
  std::vector<long> backward_version;  // per microbatch
  std::vector<long> update_version;    // per update: version when the update ran
  std::vector<int> tau;                // per update: what the executor passed to the optimizer
  std::vector<long> stale_version;     // per update: the `stale` weights passed (-1: none)
  std::vector<int> predict_tau;        // per predict() call
};

struct ProbeTape {
  long version = -1;
  std::int64_t microbatch = -1;
};

struct Fault {
  int stage = -1;
  std::int64_t microbatch = -1;
  enum class Where { forward, backward, update } where = Where::forward;
};

class ProbeModel {
 public:
  using value_type = double;
  using execution_space = Kokkos::Serial;
  using Tape = ProbeTape;
  using Params = delayopt::ParamSet<double, Kokkos::Serial>;

  ProbeModel(int stage, int stages, ProbeLog* log, Fault fault = {})
      : stage_(stage), stages_(stages), log_(log), fault_(fault), params_({{"version", 1, 1}}) {}

  Params& params() { return params_; }
  int stage() const { return stage_; }
  int stages() const { return stages_; }
  bool is_first() const { return stage_ == 0; }
  bool is_last() const { return stage_ == stages_ - 1; }
  std::size_t input_size() const { return is_first() ? 0 : 1; }
  std::size_t output_size() const { return is_last() ? 0 : 1; }
  Tape make_tape() const { return {}; }

  double forward(const Kokkos::Serial&, const Params& w, std::int64_t m, std::span<const double> in, Tape& t,
                 std::span<double> out) {
    throw_if(Fault::Where::forward, m);
    if (!in.empty() && in[0] != static_cast<double>(m)) throw std::logic_error("probe: activation out of order");
    t.version = static_cast<long>(w.flat(0)(0));
    t.microbatch = m;
    grow(log_->forward_version, m) = t.version;
    if (!out.empty()) out[0] = static_cast<double>(m);
    return is_last() ? 1.0 / static_cast<double>(m + 1) : std::nan("");
  }

  void backward(const Kokkos::Serial&, const Params& w, const Tape& t, std::span<const double> grad_out, Params&,
                std::span<double> grad_in, double, bool) {
    throw_if(Fault::Where::backward, t.microbatch);
    if (!grad_out.empty() && grad_out[0] != static_cast<double>(t.microbatch))
      throw std::logic_error("probe: gradient out of order");
    grow(log_->backward_version, t.microbatch) = static_cast<long>(w.flat(0)(0));
    if (!grad_in.empty()) grad_in[0] = static_cast<double>(t.microbatch);
  }

 private:
  static long& grow(std::vector<long>& v, std::int64_t m) {
    if (v.size() <= static_cast<std::size_t>(m)) v.resize(static_cast<std::size_t>(m) + 1, -1);
    return v[static_cast<std::size_t>(m)];
  }
  void throw_if(Fault::Where where, std::int64_t m) const {
    if (fault_.stage == stage_ && fault_.where == where && fault_.microbatch == m)
      throw std::runtime_error("probe fault at stage " + std::to_string(stage_) + ", microbatch " + std::to_string(m));
  }

  int stage_, stages_;
  ProbeLog* log_;
  Fault fault_;
  Params params_;
};

/// What the probe optimizer asks of the executor, like DC-ASGD and weight prediction do.
struct ProbeWants {
  bool stale = false;    // needs_stale_weights()
  bool predict = false;  // predicts(): predict(w, tau) = w + kPredictMark * tau
};
constexpr long kPredictMark = 1000;

class ProbeOptimizer {
 public:
  using Params = delayopt::ParamSet<double, Kokkos::Serial>;
  ProbeOptimizer(ProbeLog* log, Fault fault, int stage, ProbeWants wants = {})
      : log_(log), fault_(fault), stage_(stage), wants_(wants) {}
  void step(const Kokkos::Serial&, Params& p, const Params&, const delayopt::StepContext& ctx, const Params* stale) {
    if (fault_.stage == stage_ && fault_.where == Fault::Where::update && fault_.microbatch == ctx.step)
      throw std::runtime_error("probe optimizer fault at stage " + std::to_string(stage_));
    log_->update_version.push_back(static_cast<long>(p.flat(0)(0)));
    log_->tau.push_back(ctx.tau);
    log_->stale_version.push_back(stale ? static_cast<long>(stale->flat(0)(0)) : -1);
    p.flat(0)(0) = static_cast<double>(ctx.step + 1);
  }
  bool needs_stale_weights() const { return wants_.stale; }
  bool predicts() const { return wants_.predict; }
  void predict(const Kokkos::Serial&, const Params& from, int tau, Params& out) const {
    log_->predict_tau.push_back(tau);
    out.flat(0)(0) = from.flat(0)(0) + static_cast<double>(kPredictMark * tau);
  }

 private:
  ProbeLog* log_;
  Fault fault_;
  int stage_;
  ProbeWants wants_;
};

using ProbeRunner = StageRunner<ProbeModel, ProbeOptimizer>;

std::vector<StageReport> run_probe(const PipelineConfig& cfg, std::vector<ProbeLog>& logs, Fault fault = {},
                                   ProbeWants wants = {}) {
  logs.assign(static_cast<std::size_t>(cfg.stages), {});
  std::vector<ProbeRunner> runners;
  for (int i = 0; i < cfg.stages; ++i)
    runners.emplace_back(cfg, ProbeModel(i, cfg.stages, &logs[static_cast<std::size_t>(i)], fault),
                         ProbeOptimizer(&logs[static_cast<std::size_t>(i)], fault, i, wants));
  return run_threads(runners);
}

// ---- Real model helpers -------------------------------------------------------------------------

RunOptions small_options(int stages, const std::string& method) {
  RunOptions o;
  o.stages = stages;
  o.method = method;
  o.steps = 30;
  o.batch = 8;
  o.hidden = 16;
  o.blocks = 4;
  o.data = DataKind::synthetic;
  return o;
}

/// Every block's bytes by name, over all the given parameter sets.
std::map<std::string, std::vector<unsigned char>> blocks_by_name(const std::vector<const Stage::Params*>& sets) {
  std::map<std::string, std::vector<unsigned char>> out;
  for (const auto* set : sets) {
    const auto& p = *set;
    for (std::size_t b = 0; b < p.num_blocks(); ++b) {
      const auto v = p.flat(b);
      const auto* bytes = reinterpret_cast<const unsigned char*>(v.data());
      out[p.shape(b).name].assign(bytes, bytes + v.size() * sizeof(Real));
    }
  }
  return out;
}

/// Plain training, no pipeline: one model, forward/backward over M microbatches per step with
/// gradient accumulation, one update per step. Returns the per-step losses; leaves the weights in `stage`.
std::vector<double> train_plain(const RunOptions& o, Stage& stage, int M) {
  Space space;
  auto opt = make_method<Real, Space>(o.method, method_options(o), space, stage.params());
  auto grads = Stage::Params::zeros_like(stage.params());
  auto tape = stage.make_tape();
  std::vector<double> losses;
  for (std::int64_t step = 0; step < o.steps; ++step) {
    double loss = 0;
    for (int k = 0; k < M; ++k) {
      loss += stage.forward(space, stage.params(), step * M + k, {}, tape, {});
      stage.backward(space, stage.params(), tape, {}, grads, {}, Real(1) / static_cast<Real>(M), k > 0);
    }
    opt.step(space, stage.params(), grads, {.step = step, .tau = 0}, nullptr);
    losses.push_back(loss / M);
  }
  space.fence();
  return losses;
}

}  // namespace

// ---- Staleness ----------------------------------------------------------------------------------

TEST_CASE("async 1F1B: stage i measures staleness P-1-i (min(m, P-1-i) during warm-up)", "[pipeline]") {
  for (int P : {1, 2, 3, 4, 8})
    for (bool stash : {true, false})
      for (std::size_t capacity : {std::size_t{1}, std::size_t{3}}) {
        CAPTURE(P, stash, capacity);
        PipelineConfig cfg{.stages = P, .steps = 24, .stashing = stash, .queue_capacity = capacity};
        std::vector<ProbeLog> logs;
        const auto reports = run_probe(cfg, logs);
        REQUIRE(reports.size() == static_cast<std::size_t>(P));
        for (int i = 0; i < P; ++i) {
          const auto& r = reports[static_cast<std::size_t>(i)];
          CAPTURE(i);
          REQUIRE(r.updates == 24);
          REQUIRE(r.staleness.size() == 24u);
          for (int m = 0; m < 24; ++m) CHECK(r.staleness[static_cast<std::size_t>(m)] == std::min(m, P - 1 - i));
          CHECK(r.staleness.back() == P - 1 - i);
          CHECK(logs[static_cast<std::size_t>(i)].tau == r.staleness);  // what the optimizer was told
          CHECK(r.stashed_versions == (stash ? static_cast<std::size_t>(P - i) : 0u));
        }
      }
}

TEST_CASE("async 1F1B: the weights each pass uses (stashing on and off)", "[pipeline]") {
  const int P = 4, N = 20;
  for (bool stash : {true, false}) {
    CAPTURE(stash);
    std::vector<ProbeLog> logs;
    run_probe({.stages = P, .steps = N, .stashing = stash}, logs);
    for (int i = 0; i < P; ++i) {
      CAPTURE(i);
      const auto& log = logs[static_cast<std::size_t>(i)];
      for (int m = 0; m < N; ++m) {
        CAPTURE(m);
        // The forward of m runs after the updates of microbatches 0 .. m-(P-i): version m-(P-1-i).
        CHECK(log.forward_version[static_cast<std::size_t>(m)] == std::max(0, m - (P - 1 - i)));
        // Update m is applied to version m; the backward saw the forward's version only with stashing.
        CHECK(log.update_version[static_cast<std::size_t>(m)] == m);
        CHECK(log.backward_version[static_cast<std::size_t>(m)] ==
              (stash ? log.forward_version[static_cast<std::size_t>(m)] : m));
      }
    }
  }
}

TEST_CASE("DC-ASGD gets the weights its gradient was taken at (stashing on and off)", "[pipeline]") {
  const int P = 4, N = 20;
  for (bool stash : {true, false}) {
    CAPTURE(stash);
    std::vector<ProbeLog> logs;
    const auto reports = run_probe({.stages = P, .steps = N, .stashing = stash}, logs, {}, {.stale = true});
    for (int i = 0; i < P; ++i) {
      CAPTURE(i);
      const auto& log = logs[static_cast<std::size_t>(i)];
      // Without stashing the stage still keeps one copy per microbatch in flight, for DC-ASGD.
      CHECK(reports[static_cast<std::size_t>(i)].stashed_versions == static_cast<std::size_t>(P - i));
      for (int m = 0; m < N; ++m) {
        CAPTURE(m);
        CHECK(log.stale_version[static_cast<std::size_t>(m)] == std::max(0, m - (P - 1 - i)));
        CHECK(log.stale_version[static_cast<std::size_t>(m)] == log.forward_version[static_cast<std::size_t>(m)]);
        CHECK(log.update_version[static_cast<std::size_t>(m)] == m);
        CHECK(log.backward_version[static_cast<std::size_t>(m)] ==
              (stash ? log.forward_version[static_cast<std::size_t>(m)] : m));
      }
    }
  }
  std::vector<ProbeLog> logs;  // GPipe: the version every forward of the step used, the current one
  run_probe({.stages = 2, .steps = 5, .schedule = Schedule::sync_gpipe, .microbatches = 3}, logs, {}, {.stale = true});
  for (const auto& log : logs) CHECK(log.stale_version == std::vector<long>{0, 1, 2, 3, 4});
  run_probe({.stages = 2, .steps = 5}, logs);  // and nothing for an optimizer that does not ask
  for (const auto& log : logs) CHECK(log.stale_version == std::vector<long>(5, -1));
}

TEST_CASE("weight prediction: the forward runs on predict(w, tau) with the tau it will have", "[pipeline]") {
  const int P = 4, N = 20;
  for (bool stash : {true, false}) {
    CAPTURE(stash);
    std::vector<ProbeLog> logs;
    const auto reports = run_probe({.stages = P, .steps = N, .stashing = stash}, logs, {}, {.predict = true});
    for (int i = 0; i < P; ++i) {
      CAPTURE(i);
      const auto& log = logs[static_cast<std::size_t>(i)];
      const auto& r = reports[static_cast<std::size_t>(i)];
      REQUIRE(log.predict_tau.size() == static_cast<std::size_t>(N));
      for (int m = 0; m < N; ++m) {
        CAPTURE(m);
        const long version = std::max(0, m - (P - 1 - i));
        // The prediction horizon is the staleness the executor then measures for that update.
        CHECK(log.predict_tau[static_cast<std::size_t>(m)] == r.staleness[static_cast<std::size_t>(m)]);
        CHECK(log.forward_version[static_cast<std::size_t>(m)] == version + kPredictMark * std::min(m, P - 1 - i));
        // With stashing the backward differentiates the predicted weights too; without, the current ones.
        CHECK(log.backward_version[static_cast<std::size_t>(m)] ==
              (stash ? log.forward_version[static_cast<std::size_t>(m)] : m));
        CHECK(log.stale_version[static_cast<std::size_t>(m)] == -1);
      }
    }
  }
  std::vector<ProbeLog> logs;  // GPipe has no staleness: nothing to predict
  run_probe({.stages = 2, .steps = 4, .schedule = Schedule::sync_gpipe, .microbatches = 2}, logs, {},
            {.predict = true});
  for (const auto& log : logs) CHECK(log.predict_tau.empty());
}

TEST_CASE("sync GPipe: no staleness, one update per M microbatches", "[pipeline]") {
  std::vector<ProbeLog> logs;
  const auto reports = run_probe({.stages = 4, .steps = 6, .schedule = Schedule::sync_gpipe, .microbatches = 3}, logs);
  for (int i = 0; i < 4; ++i) {
    const auto& r = reports[static_cast<std::size_t>(i)];
    CHECK(r.updates == 6);
    CHECK(r.staleness == std::vector<int>(6, 0));
    for (int m = 0; m < 18; ++m) {
      CHECK(logs[static_cast<std::size_t>(i)].forward_version[static_cast<std::size_t>(m)] == m / 3);
      CHECK(logs[static_cast<std::size_t>(i)].backward_version[static_cast<std::size_t>(m)] == m / 3);
    }
  }
  // Step losses are means over the step's microbatches: (1/1 + 1/2 + 1/3) / 3 for step 0.
  CHECK(reports.back().loss.front() == Approx((1.0 + 0.5 + 1.0 / 3) / 3));
}

// ---- Bit-for-bit equivalence with plain training -------------------------------------------------

TEST_CASE("P = 1 reproduces plain training bit for bit", "[pipeline]") {
  for (std::string method : {"adam", "rot-cov-bi", "pipedream-lr"})
    for (bool layer_norm : {false, true})
      for (bool charlm : {false, true}) {
        CAPTURE(method, layer_norm, charlm);
        RunOptions o = small_options(1, method);
        o.layer_norm = layer_norm;
        if (charlm) o.model = ModelKind::charlm, o.context = 4, o.embed = 4;
        const auto data = load_data(o);
        const MlpSpec spec = make_spec(o, *data);

        std::vector<Runner> runners;
        runners.push_back(make_runner(o, spec, data, 0));
        const auto reports = run_threads(runners);

        Stage plain(spec, 0, 1, data);
        const auto losses = train_plain(o, plain, 1);
        REQUIRE(reports[0].loss.size() == losses.size());
        for (std::size_t k = 0; k < losses.size(); ++k)
          REQUIRE(std::memcmp(&reports[0].loss[k], &losses[k], sizeof(double)) == 0);
        CHECK(reports[0].param_hash == param_hash(plain.params()));
        CHECK(losses.back() < losses.front());  // it trains
      }
}

TEST_CASE("P = 1: dcasgd and weight-pred reproduce adam bit for bit (tau = 0)", "[pipeline]") {
  for (const auto& [method, reference] :
       std::vector<std::pair<std::string, std::string>>{{"dcasgd", "adam"},
                                                        {"weight-pred", "adam"},
                                                        {"rot-cov-bi+dcasgd", "rot-cov-bi"},
                                                        {"rot-cov-bi+weight-pred", "rot-cov-bi"}})
    for (bool stash : {true, false}) {
      CAPTURE(method, stash);
      RunOptions o = small_options(1, method);
      o.stashing = stash;
      o.layer_norm = true;
      const auto data = load_data(o);
      const MlpSpec spec = make_spec(o, *data);
      std::vector<Runner> runners;
      runners.push_back(make_runner(o, spec, data, 0));
      const auto reports = run_threads(runners);

      RunOptions ref = o;
      ref.method = reference;
      Stage plain(spec, 0, 1, data);
      const auto losses = train_plain(ref, plain, 1);
      REQUIRE(reports[0].loss.size() == losses.size());
      for (std::size_t k = 0; k < losses.size(); ++k)
        REQUIRE(std::memcmp(&reports[0].loss[k], &losses[k], sizeof(double)) == 0);
      CHECK(reports[0].param_hash == param_hash(plain.params()));
    }
}

TEST_CASE("sync GPipe over P = 4 stages equals plain training with gradient accumulation, bit for bit", "[pipeline]") {
  for (std::string method : {"adam", "rot-cov-bi"}) {
    CAPTURE(method);
    RunOptions o = small_options(4, method);
    o.schedule = Schedule::sync_gpipe;
    o.microbatches = 3;
    o.layer_norm = true;
    const auto data = load_data(o);
    const MlpSpec spec = make_spec(o, *data);
    std::vector<Runner> runners;
    for (int i = 0; i < 4; ++i) runners.push_back(make_runner(o, spec, data, i));
    const auto reports = run_threads(runners);

    RunOptions one = o;
    one.stages = 1;
    Stage plain(make_spec(one, *data), 0, 1, data);
    const auto losses = train_plain(one, plain, 3);
    REQUIRE(reports.back().loss == losses);
    std::vector<const Stage::Params*> stages;
    for (auto& r : runners) stages.push_back(&r.model().params());
    const auto split = blocks_by_name(stages), whole = blocks_by_name({&plain.params()});
    CHECK(split.size() == 4u * 4 + 2);  // 4 blocks of W, b, LN gain and bias, plus the head
    CHECK(split == whole);
  }
}

TEST_CASE("async with staleness differs from plain training, and stashing changes the result", "[pipeline]") {
  // Guards the equivalence tests above against passing vacuously.
  auto run = [](bool stash) {
    RunOptions o = small_options(4, "adam");
    o.stashing = stash;
    const auto data = load_data(o);
    const MlpSpec spec = make_spec(o, *data);
    std::vector<Runner> runners;
    for (int i = 0; i < 4; ++i) runners.push_back(make_runner(o, spec, data, i));
    return run_threads(runners).back().loss;
  };
  RunOptions one = small_options(1, "adam");
  const auto data = load_data(one);
  Stage plain(make_spec(one, *data), 0, 1, data);
  const auto plain_loss = train_plain(one, plain, 1);
  const auto with = run(true), without = run(false);
  CHECK(with.front() == plain_loss.front());  // microbatch 0 sees the initial weights everywhere
  CHECK(with != plain_loss);
  CHECK(with != without);
  CHECK(with == run(true));  // and the schedule is deterministic
}

TEST_CASE("at P = 4 each delay compensation changes the run, deterministically", "[pipeline]") {
  auto run = [](const std::string& method, bool stash) {
    RunOptions o = small_options(4, method);
    o.stashing = stash;
    const auto data = load_data(o);
    const MlpSpec spec = make_spec(o, *data);
    std::vector<Runner> runners;
    for (int i = 0; i < 4; ++i) runners.push_back(make_runner(o, spec, data, i));
    return run_threads(runners).back().loss;
  };
  for (bool stash : {true, false})
    for (const auto& [method, base] :
         std::vector<std::pair<std::string, std::string>>{{"dcasgd", "adam"},
                                                          {"weight-pred", "adam"},
                                                          {"rot-cov-bi+dcasgd", "rot-cov-bi"},
                                                          {"rot-cov-bi+weight-pred", "rot-cov-bi"}}) {
      CAPTURE(method, stash);
      const auto loss = run(method, stash);
      CHECK(loss != run(base, stash));
      CHECK(loss == run(method, stash));
      CHECK(std::isfinite(loss.back()));
    }
}

// ---- Failures -----------------------------------------------------------------------------------

TEST_CASE("a stage that throws shuts the pipeline down and its error is reported", "[pipeline]") {
  const int P = 4;
  for (auto where : {Fault::Where::forward, Fault::Where::backward, Fault::Where::update})
    for (int stage : {0, 1, P - 1})
      for (auto schedule : {Schedule::async_1f1b, Schedule::sync_gpipe}) {
        CAPTURE(static_cast<int>(where), stage, schedule == Schedule::async_1f1b);
        std::vector<ProbeLog> logs;
        const Fault fault{stage, 2, where};
        PipelineConfig cfg{.stages = P, .steps = 10, .schedule = schedule, .microbatches = 2};
        try {
          run_probe(cfg, logs, fault);
          FAIL("no error reported");
        } catch (const pipeline_error& e) {
          CHECK(e.stage() == stage);
          CHECK_THAT(e.what(), CONTAINS("pipeline stage " + std::to_string(stage) + " failed") && CONTAINS("fault"));
        }
      }
}

TEST_CASE("the driver's --inject-failure reaches the executor", "[pipeline]") {
  RunOptions o = small_options(4, "adam");
  o.inject_failure = "2:5";
  const auto data = load_data(o);
  const MlpSpec spec = make_spec(o, *data);
  try {
    run_on_threads(o, spec, data, {});
    FAIL("no error reported");
  } catch (const pipeline_error& e) {
    CHECK(e.stage() == 2);
    CHECK_THAT(e.what(), CONTAINS("injected failure in the forward pass of microbatch 5"));
  }
}

TEST_CASE("bad configurations are rejected with a clear message", "[pipeline]") {
  RunOptions o = small_options(3, "adam");  // 4 blocks over 3 stages
  const auto data = load_data(o);
  CHECK_THROWS_WITH(make_spec(o, *data), CONTAINS("--blocks 4 must be a multiple of --stages 3"));
  MlpSpec bad;
  bad.blocks = 6;
  CHECK_THROWS_WITH(bad.validate(4), CONTAINS("blocks (6) must be a multiple of the number of stages (4)"));
  RunOptions m = small_options(2, "adamw-typo");
  const auto spec = make_spec(m, *data);
  CHECK_THROWS_WITH(make_runner(m, spec, data, 0), CONTAINS("unknown method 'adamw-typo'"));
  CHECK_THROWS_WITH(make_runner(small_options(2, "adam+pipedream-lr"), spec, data, 0), CONTAINS("unknown method"));

  // A method option given on the command line that --method does not read is rejected by name.
  CLI::App app;
  RunOptions parsed;
  add_options(app, parsed);
  app.parse("--method adam --wp-gamma 0.5 --lr-horizon 10", false);
  CHECK(parsed.method_flags.size() == 2);
  RunOptions w = small_options(2, "adam");
  w.method_flags = parsed.method_flags;
  CHECK_THROWS_WITH(make_runner(w, spec, data, 0), CONTAINS("does nothing for --method adam: it applies to"));
  w.method = "rot-cov-bi+weight-pred";
  CHECK_THROWS_WITH(make_runner(w, spec, data, 0),
                    CONTAINS("--lr-horizon does nothing for --method rot-cov-bi+weight-pred: it applies to "
                             "pipedream-lr and <base>+pipedream-lr"));
  w.method_flags = {"--wp-gamma"};
  CHECK_NOTHROW(make_runner(w, spec, data, 0));
}

TEST_CASE("methods: the registry's names, the pipeline's default rates, PipeDream-LR's horizon", "[pipeline]") {
  using P1 = delayopt::ParamSet<double, Kokkos::Serial>;
  Kokkos::Serial space;
  P1 w0({{"w", 1, 4}});
  for (int k = 0; k < 4; ++k) w0.flat(0)(k) = 0.1 * (k + 1);
  P1 g = P1::zeros_like(w0);
  for (int k = 0; k < 4; ++k) g.flat(0)(k) = k % 2 ? 1.0 : -2.0;
  // The first update's size relative to Adam's: the stage discount 1 / tau^(1 - min(t / T, 1)).
  auto relative_step = [&](const std::string& method, const MethodOptions& o, std::int64_t step, int tau) {
    double delta[2];
    for (int k = 0; k < 2; ++k) {
      P1 w = w0.clone(space);
      auto opt = make_method<double, Kokkos::Serial>(k ? method : "adam", o, space, w);
      opt.step(space, w, g, {.step = step, .tau = tau}, nullptr);
      delta[k] = w.flat(0)(0) - w0.flat(0)(0);
    }
    return delta[1] / delta[0];
  };
  CHECK(relative_step("pipedream-lr", {.run_steps = 1000}, 0, 3) == Approx(1.0 / 3));
  CHECK(relative_step("pipedream-lr", {.run_steps = 100}, 50, 4) == Approx(0.5));  // T = the run's length
  CHECK(relative_step("pipedream-lr", {.horizon = 200, .run_steps = 100}, 100, 4) == Approx(0.5));
  CHECK(relative_step("pipedream-lr", {.run_steps = 100}, 100, 3) == Approx(1.0));
  CHECK(relative_step("pipedream-lr", {.run_steps = 100}, 0, 0) == 1.0);

  CHECK(default_lr("rot-cov-bi+dcasgd") == default_lr("rot-cov-bi"));
  CHECK(default_lr("adam") == 1e-3);
  for (const auto& d : method_defaults()) {  // every base builds, alone and with each compensation
    CAPTURE(d.base);
    CHECK_NOTHROW(make_method<double, Kokkos::Serial>(d.base, {}, space, w0));
    const std::string base = d.base;
    if (base.rfind("rot-", 0) == 0 || base == "soap" || base == "full-eigen")
      for (const char* comp : {"pipedream-lr", "nesterov", "dcasgd", "weight-pred", "nag"})
        CHECK_NOTHROW(make_method<double, Kokkos::Serial>(base + "+" + comp, {}, space, w0));
  }
  CHECK(make_method<double, Kokkos::Serial>("dcasgd", {}, space, w0).needs_stale_weights());
  CHECK(make_method<double, Kokkos::Serial>("soap+dcasgd", {}, space, w0).needs_stale_weights());
  CHECK_FALSE(make_method<double, Kokkos::Serial>("weight-pred", {}, space, w0).needs_stale_weights());
  CHECK(make_method<double, Kokkos::Serial>("rot-mom-uni+weight-pred", {}, space, w0).predicts());
  CHECK_FALSE(make_method<double, Kokkos::Serial>("dcasgd", {}, space, w0).predicts());
  CHECK(make_method<double, Kokkos::Serial>("rot-cov-bi+dcasgd", {}, space, w0).needs_stale_weights());

  // --clip: two steps whose gradients differ 10x in norm (|g| = sqrt(10)). Clipped to 0.1, both
  // reach Adam at one norm, and the second step differs; a clip above both norms changes nothing.
  auto two_steps = [&](const MethodOptions& o) {
    P1 w = w0.clone(space), g2 = g.clone(space);
    for (int k = 0; k < 4; ++k) g2.flat(0)(k) *= 10;
    auto opt = make_method<double, Kokkos::Serial>("adam", o, space, w);
    opt.step(space, w, g, {.step = 0}, nullptr);
    opt.step(space, w, g2, {.step = 1}, nullptr);
    return w.flat(0)(0);
  };
  CHECK(two_steps({.clip = 100}) == two_steps({}));
  CHECK(two_steps({.clip = 0.1}) != Approx(two_steps({})).epsilon(1e-6));
}

TEST_CASE("data: the Debian files load, or the fallback says it ran", "[pipeline]") {
  const Dataset digits = load_digits(digits_default_path, 1);
  if (digits.synthetic) {
    WARN("python3-sklearn is not installed: " << digits.source);
    CHECK_THAT(digits.source, CONTAINS("synthetic") && CONTAINS("python3-sklearn"));
  } else {
    CHECK(digits.size() == 1797u);
    CHECK(digits.features == 64);
    CHECK(*std::max_element(digits.x.begin(), digits.x.end()) == 1.0f);
  }
  const Dataset text = load_text(fortunes_default_dir, 8, 1);
  if (text.synthetic) WARN("fortunes-min is not installed: " << text.source);
  CHECK(text.is_text());
  CHECK(text.size() > 10000u);
  const Dataset missing = load_digits("/nonexistent/digits.csv.gz", 1);
  CHECK(missing.synthetic);
  CHECK_THAT(missing.source, CONTAINS("/nonexistent/digits.csv.gz: it does not exist; install python3-sklearn"));
}

TEST_CASE("data: a path that cannot load throws its reason in fail mode, and a quote in it is safe", "[pipeline]") {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("delayopt data 'quoted' " + std::to_string(::getpid()));
  fs::create_directories(dir);
  const auto write = [&](const std::string& file, const std::string& text) {
    std::ofstream(dir / file) << text;
    return (dir / file).string();
  };
  const auto gzipped = [&](const std::string& file, const std::string& text) {
    const std::string plain = write(file, text);
    REQUIRE(std::system(("gzip -f " + detail::shell_quoted(plain)).c_str()) == 0);
    return plain + ".gz";
  };
  const auto fails_with = [](auto&& load, const std::string& why) { CHECK_THROWS_WITH(load(), CONTAINS(why)); };
  std::string row;  // pixels 0, 1, ..., 16, then zeros; label 7
  for (int f = 0; f < 64; ++f) row += std::to_string(f <= 16 ? f : 0) + ",";
  row += "7\n";
  const std::string good = gzipped("it's.csv", row + row);
  const Dataset two = load_digits(good, 1, Unloadable::fail);
  CHECK_FALSE(two.synthetic);
  CHECK(two.size() == 2u);
  CHECK(two.y[1] == 7);
  CHECK(two.x[16] == 1.0f);

  fails_with([&] { return load_digits((dir / "none.csv.gz").string(), 1, Unloadable::fail); }, "it does not exist");
  fails_with([&] { return load_digits(write("plain.csv", row), 1, Unloadable::fail); }, "gzip cannot decompress it");
  fails_with([&] { return load_digits(gzipped("short.csv", row + "1,2,3\n"), 1, Unloadable::fail); },
             "line 2 is not 64 pixels and a label 0-9");
  fails_with([&] { return load_digits(gzipped("empty.csv", "\n"), 1, Unloadable::fail); }, "it holds no rows");
  fails_with([&] { return load_text((dir / "none").string(), 8, 1, Unloadable::fail); }, "it does not exist");
  fails_with([&] { return load_text(good, 8, 1, Unloadable::fail); }, "it is not a directory");
  fs::create_directories(dir / "fortunes");
  std::ofstream(dir / "fortunes" / "tiny") << "A short fortune.\n%\nAnother.\n";
  fails_with([&] { return load_text((dir / "fortunes").string(), 8, 1, Unloadable::fail); },
             "its 1 fortune files hold 27 bytes, fewer than 10000");
  // The default mode falls back and says why.
  const Dataset fallback = load_text((dir / "fortunes").string(), 8, 1);
  CHECK(fallback.synthetic);
  CHECK_THAT(fallback.source, CONTAINS("fewer than 10000; install fortunes-min"));
  fs::remove_all(dir);
}

int main(int argc, char* argv[]) {
  setenv("OMP_PROC_BIND", "false", 0);  // keeps Kokkos' OpenMP warning out of ctest's test discovery
  Kokkos::ScopeGuard guard(kokkos_settings());
  return Catch::Session().run(argc, argv);
}
