/// \file driver.hpp
/// \brief What delayopt_pipeline and delayopt_pipeline_demo share: options, building the stages,
/// running them on threads, progress lines, iterations-to-target and the JSON record.
#pragma once

#include "data.hpp"
#include "executor.hpp"
#include "methods.hpp"
#include "model.hpp"

#include <cli_checks.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <map>
#include <memory>
#include <numeric>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#if !defined(KOKKOS_ENABLE_SERIAL)
#error "the pipeline example runs every stage on Kokkos::Serial; build Kokkos with Kokkos_ENABLE_SERIAL=ON"
#endif

namespace pipeline {

using Real = float;
/// Each stage computes on Kokkos::Serial in its own thread (or rank): the stages are the parallelism.
using Space = Kokkos::Serial;
using Stage = MlpStage<Real, Space>;
using Runner = StageRunner<Stage, StageMethod<Real, Space>>;

/// Kokkos settings for the pipeline programs. The stages compute on Kokkos::Serial in their own
/// threads (or ranks); the OpenMP backend only zero-fills allocations during set-up. One OpenMP
/// thread keeps idle OpenMP workers from spinning on the cores the stages need (with two on two
/// cores, the allocation-heavy set-up of the tests ran 20x slower). InitializationSettings came
/// with Kokkos 3.7; 3.4 has InitArguments.
#if KOKKOS_VERSION >= 30700
inline Kokkos::InitializationSettings kokkos_settings() { return Kokkos::InitializationSettings().set_num_threads(1); }
#else
inline Kokkos::InitArguments kokkos_settings() {
  Kokkos::InitArguments a;
  a.num_threads = 1;
  return a;
}
#endif

enum class ModelKind { mlp, charlm };

/// Every knob of a run (the driver's command line).
struct RunOptions {
  std::string transport = "threads";
  int stages = 4;
  ModelKind model = ModelKind::mlp;
  std::optional<DataKind> data;  ///< default: digits for mlp, text for charlm
  std::string data_path;
  std::string method = "adam";
  double lr = 0;       ///< 0: the method's default
  double horizon = 0;  ///< PipeDream-LR horizon; 0: the run's length
  double dcasgd_lambda = 0.04;
  double wp_gamma = 0.9;
  double nag_gamma = 0.9;
  double clip = 0;  ///< each stage's gradient clipped to this global L2 norm; 0: off
  std::int64_t steps = 1000;
  bool stashing = true;
  Schedule schedule = Schedule::async_1f1b;
  int microbatches = 0;  ///< sync: 0 means P
  int batch = 32;
  int hidden = 0;  ///< 0: 64 (mlp) / 128 (charlm)
  int blocks = 8;
  std::optional<bool> layer_norm;  ///< default: on for charlm (deep tanh blocks need it), off for mlp
  Activation activation = Activation::tanh;
  int context = 16, embed = 16;
  std::uint64_t seed = 1;
  std::size_t queue_capacity = 2;
  double target = 0;  ///< 0: 0.05 (digits), 2.2 (text), 0.2 (synthetic)
  int window = 50;
  std::int64_t progress_every = 0;
  std::string json;
  std::string inject_failure;  ///< "STAGE:MICROBATCH"
  /// The method options given on the command line (--lr-horizon, ...): make_runner() rejects one
  /// that --method does not read.
  std::vector<std::string> method_flags;

  DataKind data_kind() const { return data ? *data : (model == ModelKind::charlm ? DataKind::text : DataKind::digits); }
  bool use_layer_norm() const { return layer_norm ? *layer_norm : model == ModelKind::charlm; }
  int microbatches_per_step() const {
    return schedule == Schedule::async_1f1b ? 1 : (microbatches > 0 ? microbatches : stages);
  }
};

inline const char* name(Schedule s) { return s == Schedule::async_1f1b ? "async" : "sync"; }
inline const char* name(ModelKind m) { return m == ModelKind::mlp ? "mlp" : "charlm"; }
inline const char* name(Activation a) { return a == Activation::tanh ? "tanh" : "relu"; }
inline const char* name(DataKind d) {
  return d == DataKind::digits ? "digits" : d == DataKind::text ? "text" : "synthetic";
}

/// The method options and the registry knob each one sets.
inline const std::vector<std::pair<std::string, delayopt::tools::Knob>>& method_option_knobs() {
  using delayopt::tools::Knob;
  static const std::vector<std::pair<std::string, Knob>> table{{"--lr-horizon", Knob::anneal_steps},
                                                               {"--dcasgd-lambda", Knob::dcasgd_lambda},
                                                               {"--wp-gamma", Knob::wp_gamma},
                                                               {"--nag-gamma", Knob::nag_gamma}};
  return table;
}

/// Registers the command-line options on `app`.
inline void add_options(CLI::App& app, RunOptions& o) {
  // Records a method option as given, for make_runner()'s check.
  const auto given = [&o](std::string flag) {
    return [&o, flag = std::move(flag)](const std::string&) { o.method_flags.push_back(flag); };
  };
  app.add_option("--transport", o.transport, "threads (one process) or mpi (one rank per stage, run under mpirun)")
      ->check(CLI::IsMember({"threads", "mpi"}))
      ->capture_default_str();
  app.add_option("--stages", o.stages, "pipeline stages P")->check(CLI::Range(1, 256))->capture_default_str();
  app.add_option("--model", o.model, "mlp (block MLP classifier) or charlm (character MLP language model)")
      ->transform(CLI::CheckedTransformer(
          std::map<std::string, ModelKind>{{"mlp", ModelKind::mlp}, {"charlm", ModelKind::charlm}}));
  app.add_option("--data", o.data, "digits (python3-sklearn), text (fortunes-min) or synthetic; default by model")
      ->transform(CLI::CheckedTransformer(std::map<std::string, DataKind>{
          {"digits", DataKind::digits}, {"text", DataKind::text}, {"synthetic", DataKind::synthetic}}));
  app.add_option("--data-path", o.data_path, "digits.csv.gz or a directory of fortune files (default: Debian's)");
  app.add_option("--method", o.method, "optimizer: " + method_names())->capture_default_str();
  app.add_option("--lr", o.lr, "learning rate (default: the method's)")->check(delayopt::cli::non_negative);
  app.add_option("--lr-horizon", o.horizon, "PipeDream-LR horizon T in steps (default: --steps)")
      ->check(delayopt::cli::number_in(0, true, 1e12, true))
      ->each(given("--lr-horizon"));
  app.add_option("--dcasgd-lambda", o.dcasgd_lambda, "DC-ASGD's lambda (dcasgd, <base>+dcasgd)")
      ->check(delayopt::cli::non_negative)
      ->capture_default_str()
      ->each(given("--dcasgd-lambda"));
  app.add_option("--wp-gamma", o.wp_gamma,
                 "weight prediction's EMA factor of the weight velocity, in [0, 1) (weight-pred, <base>+weight-pred)")
      ->check(delayopt::cli::number_in(0, true, 1, false))
      ->capture_default_str()
      ->each(given("--wp-gamma"));
  app.add_option("--nag-gamma", o.nag_gamma,
                 "delay::Nesterov's look-ahead momentum, in [0, 1) (nag, <base>+nag, <base>+nesterov+nag)")
      ->check(delayopt::cli::number_in(0, true, 1, false))
      ->capture_default_str()
      ->each(given("--nag-gamma"));
  app.add_option("--clip", o.clip, "clip each stage's gradient to this global L2 norm before its update (0: off)")
      ->check(delayopt::cli::non_negative)
      ->capture_default_str();
  app.add_option("--steps", o.steps, "optimizer updates per stage")
      ->check(delayopt::cli::positive)
      ->capture_default_str();
  app.add_flag("!--no-stashing", o.stashing, "async: backward with the current weights, not the forward's");
  app.add_option("--schedule", o.schedule, "async (PipeDream 1F1B) or sync (GPipe with flush)")
      ->transform(CLI::CheckedTransformer(
          std::map<std::string, Schedule>{{"async", Schedule::async_1f1b}, {"sync", Schedule::sync_gpipe}}));
  app.add_option("--microbatches", o.microbatches, "sync: microbatches per update (default: P)")
      ->check(delayopt::cli::non_negative);
  app.add_option("--batch", o.batch, "samples per microbatch")->check(delayopt::cli::positive)->capture_default_str();
  app.add_option("--hidden", o.hidden, "hidden width (default 64 mlp, 128 charlm)")->check(delayopt::cli::non_negative);
  app.add_option("--blocks", o.blocks, "hidden blocks, a multiple of --stages")
      ->check(delayopt::cli::positive)
      ->capture_default_str();
  app.add_flag_callback(
      "--layer-norm", [&o] { o.layer_norm = true; }, "layer norm in every block (default for charlm)");
  app.add_flag_callback(
      "--no-layer-norm", [&o] { o.layer_norm = false; }, "no layer norm (default for mlp)");
  app.add_option("--activation", o.activation, "tanh or relu")
      ->transform(CLI::CheckedTransformer(
          std::map<std::string, Activation>{{"tanh", Activation::tanh}, {"relu", Activation::relu}}));
  app.add_option("--context", o.context, "charlm: characters of context")
      ->check(delayopt::cli::positive)
      ->capture_default_str();
  app.add_option("--embed", o.embed, "charlm: embedding width")->check(delayopt::cli::positive)->capture_default_str();
  app.add_option("--seed", o.seed, "initialisation and sampling seed")->capture_default_str();
  app.add_option("--queue-capacity", o.queue_capacity, "messages buffered per channel (threads and mpi)")
      ->check(delayopt::cli::positive)
      ->capture_default_str();
  app.add_option("--target", o.target, "loss target for iterations_to_target (default: by data)")
      ->check(delayopt::cli::non_negative);
  app.add_option("--window", o.window, "steps averaged for the smoothed loss")
      ->check(delayopt::cli::positive)
      ->capture_default_str();
  app.add_option("--progress-every", o.progress_every, "print a progress line every N steps (0: off)")
      ->check(delayopt::cli::non_negative);
  app.add_option("--json", o.json, "write the run's record (staleness, loss, steps_per_sec, ...) here");
  app.add_option("--inject-failure", o.inject_failure, "testing: STAGE:MICROBATCH throws in that forward pass");
}

/// Rejects an option that the rest of the command line makes do nothing, as delayopt_convergence
/// does: a flag that silently has no effect reads like a result that it made no difference.
inline void check_options(const CLI::App& app, const RunOptions& o) {
  if (o.schedule == Schedule::async_1f1b && app.count("--microbatches") > 0)
    throw std::invalid_argument("--microbatches applies to --schedule sync (async 1F1B updates once per microbatch)");
  if (o.schedule == Schedule::sync_gpipe && !o.stashing)
    throw std::invalid_argument("--no-stashing applies to --schedule async (GPipe has no stale weights to stash)");
  if (o.model == ModelKind::mlp && (app.count("--context") > 0 || app.count("--embed") > 0))
    throw std::invalid_argument("--context and --embed apply to --model charlm");
}

/// The network for `o` on data `d`.
inline MlpSpec make_spec(const RunOptions& o, const Dataset& d) {
  if (o.blocks < o.stages || o.blocks % o.stages != 0)
    throw std::invalid_argument("--blocks " + std::to_string(o.blocks) + " must be a multiple of --stages " +
                                std::to_string(o.stages) + " (every stage owns the same number of blocks)");
  MlpSpec s;
  s.hidden = o.hidden > 0 ? o.hidden : (o.model == ModelKind::charlm ? 128 : 64);
  s.blocks = o.blocks;
  s.batch = o.batch;
  s.layer_norm = o.use_layer_norm();
  s.activation = o.activation;
  s.seed = o.seed;
  s.classes = d.classes;
  if (d.is_text()) {
    s.vocab = d.classes;
    s.context = d.context;
    s.embed = o.embed;
  } else {
    s.input_dim = d.features;
  }
  s.validate(o.stages);
  return s;
}

inline std::shared_ptr<const Dataset> load_data(const RunOptions& o) {
  if (o.model == ModelKind::charlm && o.data_kind() == DataKind::digits)
    throw std::invalid_argument("--model charlm needs --data text (or synthetic text)");
  if (o.model == ModelKind::charlm && o.data_kind() == DataKind::synthetic)
    return std::make_shared<const Dataset>(synthetic_text(o.context, o.seed, "requested with --data synthetic"));
  if (o.model == ModelKind::mlp && o.data_kind() == DataKind::text)
    throw std::invalid_argument("--model mlp classifies digits; use --model charlm for --data text");
  // The synthetic fallback is for Debian's default files; a path the user named must load.
  const Unloadable mode = o.data_path.empty() ? Unloadable::use_synthetic : Unloadable::fail;
  try {
    auto d = load_dataset(o.data_kind(), o.data_path, o.context, o.seed, mode);
    return std::make_shared<const Dataset>(std::move(d));
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument("--data-path with --data " + std::string(name(o.data_kind())) + ": " + e.what());
  }
}

inline double default_target(const RunOptions& o, const Dataset& d) {
  if (o.target > 0) return o.target;
  if (d.synthetic) return d.is_text() ? 1.3 : 0.2;
  return d.is_text() ? 2.2 : 0.05;
}

inline PipelineConfig make_config(const RunOptions& o) {
  PipelineConfig c;
  c.stages = o.stages;
  c.steps = o.steps;
  c.schedule = o.schedule;
  c.stashing = o.stashing;
  c.microbatches = o.microbatches_per_step();
  c.queue_capacity = o.queue_capacity;
  if (!o.inject_failure.empty()) {
    // A failure that can never fire would let a test of the failure path pass without one.
    const std::string& f = o.inject_failure;
    const std::int64_t microbatches = o.steps * c.microbatches;
    const auto whole = [](std::string_view text, auto& value) {
      const auto r = std::from_chars(text.data(), text.data() + text.size(), value);
      return r.ec == std::errc() && r.ptr == text.data() + text.size();
    };
    const auto colon = f.find(':');
    if (colon == std::string::npos || !whole(std::string_view(f).substr(0, colon), c.fail_stage) ||
        !whole(std::string_view(f).substr(colon + 1), c.fail_microbatch) || c.fail_stage < 0 ||
        c.fail_stage >= o.stages || c.fail_microbatch < 0 || c.fail_microbatch >= microbatches)
      throw std::invalid_argument("--inject-failure " + f + ": wants STAGE:MICROBATCH with 0 <= STAGE < " +
                                  std::to_string(o.stages) + " and 0 <= MICROBATCH < " + std::to_string(microbatches) +
                                  " (the run's microbatches)");
  }
  return c;
}

inline MethodOptions method_options(const RunOptions& o) {
  return {.lr = o.lr,
          .horizon = o.horizon,
          .run_steps = o.steps,
          .dcasgd_lambda = o.dcasgd_lambda,
          .wp_gamma = o.wp_gamma,
          .nag_gamma = o.nag_gamma,
          .clip = o.clip};
}

/// Stage `i` with its optimizer. Allocates: call on the thread that initialised Kokkos.
inline Runner make_runner(const RunOptions& o, const MlpSpec& spec, std::shared_ptr<const Dataset> data, int i) {
  Stage stage(spec, i, o.stages, std::move(data));
  auto opt = make_method<Real, Space>(o.method, method_options(o), Space(), stage.params());
  // An option the method does not read would change nothing: say so rather than run without it.
  for (const auto& [flag, knob] : method_option_knobs())
    if (std::find(o.method_flags.begin(), o.method_flags.end(), flag) != o.method_flags.end() && !opt.reads().has(knob))
      throw std::invalid_argument(flag + " does nothing for --method " + o.method + ": it applies to " +
                                  delayopt::tools::methods_reading(knob));
  return Runner(make_config(o), std::move(stage), std::move(opt));
}

/// First step count n at which the mean loss of steps [n - window, n) is <= target.
inline std::optional<std::int64_t> iterations_to_target(const std::vector<double>& loss, double target, int window) {
  double sum = 0;
  for (std::size_t n = 0; n < loss.size(); ++n) {
    sum += loss[n];
    if (n >= static_cast<std::size_t>(window)) sum -= loss[n - static_cast<std::size_t>(window)];
    if (n + 1 >= static_cast<std::size_t>(window) && sum / window <= target) return static_cast<std::int64_t>(n + 1);
  }
  return std::nullopt;
}

inline double tail_mean(const std::vector<double>& loss, int window) {
  const std::size_t n = std::min(loss.size(), static_cast<std::size_t>(window));
  if (n == 0) return 0;
  return std::accumulate(loss.end() - static_cast<std::ptrdiff_t>(n), loss.end(), 0.0) / static_cast<double>(n);
}

/// Periodic progress lines: step, smoothed loss, steps/s since the start.
class Progress {
 public:
  Progress(std::string label, std::int64_t steps, std::int64_t every, int window)
      : label_(std::move(label)),
        steps_(steps),
        every_(every),
        window_(window),
        t0_(std::chrono::steady_clock::now()) {}

  void operator()(std::int64_t step, double loss) {
    loss_.push_back(loss);
    const std::int64_t n = step + 1;
    if (every_ <= 0 || (n % every_ != 0 && n != steps_)) return;
    const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
    std::printf("  %s step %6" PRId64 "/%" PRId64 "  loss %.4f (mean of last %d)  %7.1f steps/s\n", label_.c_str(), n,
                steps_, tail_mean(loss_, window_), window_, static_cast<double>(n) / sec);
    std::fflush(stdout);
  }

 private:
  std::string label_;
  std::int64_t steps_, every_;
  int window_;
  std::chrono::steady_clock::time_point t0_;
  std::vector<double> loss_;
};

/// One run's outcome, from every stage's report.
struct RunResult {
  std::vector<StageReport> stages;
  double seconds = 0;  ///< wall time of the pipeline (setup excluded)
  const std::vector<double>& loss() const { return stages.back().loss; }
};

inline std::string hex(std::uint64_t h) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "%016" PRIx64, h);
  return buf;
}

/// The JSON record of a run (the driver's --json file).
inline nlohmann::json to_json(const RunOptions& o, const MlpSpec& spec, const Dataset& d, const RunResult& r) {
  nlohmann::json j;
  const double target = default_target(o, d);
  const auto n = static_cast<double>(o.steps);
  const int mb = o.microbatches_per_step();
  j["transport"] = o.transport;
  j["stages"] = o.stages;
  j["schedule"] = name(o.schedule);
  j["stashing"] = o.schedule == Schedule::async_1f1b && o.stashing;
  j["method"] = o.method;
  j["lr"] = o.lr > 0 ? o.lr : default_lr(o.method);  // the rate that ran
  j["lr_default"] = o.lr <= 0;
  j["seed"] = o.seed;
  j["clip"] = o.clip;
  j["activation"] = name(o.activation);
  j["model"] = name(o.model);
  j["data"] = name(o.data_kind());
  j["data_source"] = d.source;
  j["synthetic_data"] = d.synthetic;
  j["network"] = {{"blocks", spec.blocks},
                  {"hidden", spec.hidden},
                  {"layer_norm", spec.layer_norm},
                  {"classes", spec.classes},
                  {"input_width", spec.first_width()}};
  j["steps"] = o.steps;
  j["batch"] = o.batch;
  j["microbatches_per_step"] = mb;
  j["seconds"] = r.seconds;
  j["steps_per_sec"] = n / r.seconds;
  j["microbatches_per_sec"] = n * mb / r.seconds;
  j["samples_per_sec"] = n * mb * o.batch / r.seconds;
  std::vector<int> last, max;
  std::vector<double> mean;
  std::vector<std::size_t> stashed;
  std::vector<std::string> hashes;
  for (const auto& s : r.stages) {
    last.push_back(s.staleness.back());
    max.push_back(*std::max_element(s.staleness.begin(), s.staleness.end()));
    mean.push_back(std::accumulate(s.staleness.begin(), s.staleness.end(), 0.0) /
                   static_cast<double>(s.staleness.size()));
    stashed.push_back(s.stashed_versions);
    hashes.push_back(hex(s.param_hash));
  }
  j["staleness"] = last;  // measured by the executor's version counters at the last update
  j["staleness_max"] = max;
  j["staleness_mean"] = mean;
  j["stashed_versions"] = stashed;
  j["param_hash"] = hashes;
  j["loss"] = r.loss();
  j["loss_window"] = o.window;
  j["target"] = target;
  const auto it = iterations_to_target(r.loss(), target, o.window);
  j["iterations_to_target"] = it ? nlohmann::json(*it) : nlohmann::json(nullptr);
  j["final_loss"] = tail_mean(r.loss(), o.window);
  return j;
}

/// One line describing the run before it starts.
inline void print_header(const RunOptions& o, const MlpSpec& spec, const Dataset& d) {
  const std::string schedule =
      o.schedule == Schedule::async_1f1b
          ? std::string("async 1F1B ") + (o.stashing ? "with weight stashing" : "without stashing")
          : "sync GPipe, " + std::to_string(o.microbatches_per_step()) + " microbatches per update";
  std::printf("delayopt_pipeline: %s transport, P=%d, %s, method %s, %s %dx%d%s on %s\n", o.transport.c_str(), o.stages,
              schedule.c_str(), o.method.c_str(), name(o.model), spec.blocks, spec.hidden,
              spec.layer_norm ? " +LN" : "", d.source.c_str());
  std::fflush(stdout);
}

/// The result in a few lines (the JSON has everything).
inline void print_summary(const nlohmann::json& j) {
  std::printf("delayopt_pipeline: %" PRId64
              " steps in %.2f s = %.1f steps/s (%.1f microbatches/s); staleness per stage %s; "
              "final loss %.4f; iterations to loss %.3g: %s\n",
              j["steps"].get<std::int64_t>(), j["seconds"].get<double>(), j["steps_per_sec"].get<double>(),
              j["microbatches_per_sec"].get<double>(), j["staleness"].dump().c_str(), j["final_loss"].get<double>(),
              j["target"].get<double>(), j["iterations_to_target"].dump().c_str());
  std::fflush(stdout);
}

/// Runs every stage on its own thread in this process.
inline RunResult run_on_threads(const RunOptions& o, const MlpSpec& spec, std::shared_ptr<const Dataset> data,
                                const LossCallback& on_loss) {
  std::vector<Runner> runners;
  for (int i = 0; i < o.stages; ++i) runners.push_back(make_runner(o, spec, data, i));
  const auto t0 = std::chrono::steady_clock::now();
  RunResult r;
  r.stages = run_threads(runners, on_loss);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

}  // namespace pipeline
