// delayopt_pipeline_demo: what asynchronous pipeline staleness costs each optimizer, measured in a
// real pipeline. Trains the same network at P = 1 and P = 8 stages (threads, PipeDream 1F1B with
// weight stashing) with Adam, the PipeDream-LR discount, basis rotation and their combination;
// prints progress, a table of iterations to the target loss with the slowdown vs P = 1, and
// writes the loss curves (CSV) and a PNG plot (gnuplot).
#include "driver.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>  // environ

namespace {

using namespace pipeline;

struct Run {
  std::string method;
  int stages;
  std::vector<double> loss;
  double seconds;
  std::optional<std::int64_t> iters;
  std::vector<int> staleness;
};

std::vector<double> smoothed(const std::vector<double>& loss, int window) {
  std::vector<double> out;
  double sum = 0;
  for (std::size_t n = 0; n < loss.size(); ++n) {
    sum += loss[n];
    if (n >= static_cast<std::size_t>(window)) sum -= loss[n - static_cast<std::size_t>(window)];
    out.push_back(sum / static_cast<double>(std::min(n + 1, static_cast<std::size_t>(window))));
  }
  return out;
}

/// `text` as a gnuplot single-quoted string (a quote inside is doubled).
std::string gp_quoted(const std::string& text) {
  std::string out = "'";
  for (char c : text) out += c == '\'' ? std::string("''") : std::string(1, c);
  return out + "'";
}

/// Runs `gnuplot script`, without a shell (so no quoting of user paths); its exit status, or -1 when
/// gnuplot could not be started.
int run_gnuplot(const std::filesystem::path& script) {
  std::string prog = "gnuplot", arg = script.string();
  char* argv[] = {prog.data(), arg.data(), nullptr};
  pid_t pid = 0;
  if (posix_spawnp(&pid, "gnuplot", nullptr, nullptr, argv, environ) != 0) return -1;
  int status = 0;
  if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status)) return -1;
  return WEXITSTATUS(status) == 127 ? -1 : WEXITSTATUS(status);  // 127: exec failed in the child
}

/// losses.csv (smoothed loss per run) and loss.png through gnuplot. Returns what it wrote.
std::string write_plot(const std::filesystem::path& dir, const std::vector<Run>& runs, int window, double target) {
  std::filesystem::create_directories(dir);
  const auto csv = dir / "losses.csv", gp = dir / "loss.gp", png = dir / "loss.png";
  std::vector<std::vector<double>> cols;
  std::ofstream out(csv);
  out << "step";
  for (const auto& r : runs) {
    out << ',' << r.method << " P=" << r.stages;
    cols.push_back(smoothed(r.loss, window));
  }
  out << '\n';
  for (std::size_t n = 0; n < cols.front().size(); ++n) {
    out << n + 1;
    for (const auto& c : cols) out << ',' << (n < c.size() ? c[n] : std::nan(""));
    out << '\n';
  }
  out.close();
  std::map<std::string, int> color;
  std::ofstream g(gp);
  g << "set terminal pngcairo size 1100,650 font ',11'\nset output " << gp_quoted(png.string()) << "\n"
    << "set datafile separator ','\nset logscale y\nset format y '%g'\nset grid\nset key outside right\n"
    << "set xlabel 'iteration (optimizer step)'\nset ylabel 'training loss (mean of last " << window << " steps)'\n"
    << "set title \"delayopt async pipeline, PipeDream 1F1B: P=1 solid, deeper pipelines dashed\\n(at P=1 a method and "
       "its +pipedream-lr variant coincide: no staleness, no discount)\"\n"
    << "plot " << target << " with lines lc 'black' lw 1 dt 3 title 'target'";
  for (std::size_t k = 0; k < runs.size(); ++k) {
    const int c = color.emplace(runs[k].method, static_cast<int>(color.size()) + 1).first->second;
    g << ", " << gp_quoted(csv.string()) << " using 1:" << k + 2 << " with lines lw 2 lc " << c << " dt "
      << (runs[k].stages == 1 ? 1 : 2) << " title '" << runs[k].method << " P=" << runs[k].stages << "'";
  }
  g << '\n';
  g.close();
  const int status = run_gnuplot(gp);
  if (status < 0) return csv.string() + " and " + gp.string() + " (no PNG: gnuplot not found; install gnuplot-nox)";
  if (status != 0 || !std::filesystem::exists(png))
    return csv.string() + " and " + gp.string() + " (no PNG: gnuplot failed on the script; see above)";
  return png.string() + " (curves in " + csv.string() + ")";
}

}  // namespace

int main(int argc, char* argv[]) {
  CLI::App app{"delayopt_pipeline_demo: iterations to a target loss in a real asynchronous pipeline, P = 1 vs P = 8"};
  RunOptions o;
  o.steps = 2000;
  std::vector<int> stages{1, 8};
  std::vector<std::string> methods{"adam", "pipedream-lr", "nesterov", "rot-cov-bi", "rot-cov-bi+nesterov"};
  std::string out_dir = "pipeline_demo";
  app.add_option("--stages", stages, "pipeline depths to run (the first is the baseline)")
      ->delimiter(',')
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  app.add_option("--methods", methods, "methods: " + method_names())->delimiter(',')->capture_default_str();
  app.add_option("--steps", o.steps, "optimizer steps per run")->check(delayopt::cli::positive)->capture_default_str();
  app.add_option("--target", o.target, "loss target (default: 0.05 digits, 2.2 text)")
      ->check(delayopt::cli::non_negative);
  app.add_option("--model", o.model, "mlp (digits) or charlm (fortunes text; slower, try --steps 3000)")
      ->transform(CLI::CheckedTransformer(
          std::map<std::string, ModelKind>{{"mlp", ModelKind::mlp}, {"charlm", ModelKind::charlm}}));
  app.add_option("--data", o.data, "digits, text or synthetic (default: by model)")
      ->transform(CLI::CheckedTransformer(std::map<std::string, DataKind>{
          {"digits", DataKind::digits}, {"text", DataKind::text}, {"synthetic", DataKind::synthetic}}));
  app.add_option("--blocks", o.blocks, "hidden blocks (a multiple of every P)")
      ->check(delayopt::cli::positive)
      ->capture_default_str();
  app.add_option("--hidden", o.hidden, "hidden width (default 64)")->check(delayopt::cli::positive);
  app.add_option("--lr", o.lr, "one learning rate for every method (default: each method's)")
      ->check(delayopt::cli::positive);
  app.add_flag("!--no-stashing", o.stashing, "run without weight stashing");
  app.add_option("--seed", o.seed, "seed")->capture_default_str();
  app.add_option("--out", out_dir, "directory for losses.csv and loss.png")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  setenv("OMP_PROC_BIND", "false", 0);  // one OpenMP thread: binding is moot; keeps Kokkos quiet
  Kokkos::ScopeGuard guard(kokkos_settings());
  try {
    // Every name before the first run, so a typo does not surface after minutes of training.
    for (const auto& m : methods)
      make_method<Real, Space>(m, {}, Space(), delayopt::ParamSet<Real, Space>({{"W", 2, 2, 2}}));
    const auto data = load_data(o);
    const double target = default_target(o, *data);
    std::printf(
        "delayopt pipeline demo: each stage in its own thread, PipeDream 1F1B %s weight stashing; stage i "
        "of P applies gradients P-1-i steps stale\n  data: %s\n  target: training loss (mean of last %d "
        "steps) <= %.3g\n\n",
        o.stashing ? "with" : "without", data->source.c_str(), o.window, target);
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<Run> runs;
    for (const auto& method : methods)
      for (int P : stages) {
        RunOptions r = o;
        r.method = method;
        r.stages = P;
        r.progress_every = std::max<std::int64_t>(1, o.steps / 4);
        const MlpSpec spec = make_spec(r, *data);
        char label[96];
        std::snprintf(label, sizeof label, "[%-24s P=%d]", method.c_str(), P);
        Progress progress(label, r.steps, r.progress_every, r.window);
        const RunResult res = run_on_threads(r, spec, data, std::ref(progress));
        std::vector<int> staleness;
        for (const auto& s : res.stages) staleness.push_back(s.staleness.back());
        runs.push_back(
            {method, P, res.loss(), res.seconds, iterations_to_target(res.loss(), target, r.window), staleness});
      }

    std::printf("\n%-26s %3s  %-22s  %15s  %10s  %10s  %8s\n", "method", "P", "staleness (measured)", "iters to target",
                "slowdown", "final loss", "steps/s");
    for (const auto& r : runs) {
      const Run& base = *std::find_if(runs.begin(), runs.end(),
                                      [&](const Run& b) { return b.method == r.method && b.stages == stages.front(); });
      std::string st = "[";
      for (std::size_t i = 0; i < r.staleness.size(); ++i) st += (i ? "," : "") + std::to_string(r.staleness[i]);
      st += "]";
      const std::string iters = r.iters ? std::to_string(*r.iters) : "> " + std::to_string(o.steps);
      char slow[32] = "-";
      if (r.iters && base.iters)
        std::snprintf(slow, sizeof slow, "%.2fx", static_cast<double>(*r.iters) / static_cast<double>(*base.iters));
      else if (!r.iters && base.iters)
        std::snprintf(slow, sizeof slow, "> %.2fx", static_cast<double>(o.steps) / static_cast<double>(*base.iters));
      std::printf("%-26s %3d  %-22s  %15s  %10s  %10.4f  %8.0f\n", r.method.c_str(), r.stages, st.c_str(),
                  iters.c_str(), slow, tail_mean(r.loss, o.window), static_cast<double>(o.steps) / r.seconds);
    }
    const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf(
        "\nplot: %s\n(%.1f s; slowdown = iterations at P / iterations at P=%d, same method; steps/s counts "
        "optimizer steps of the whole pipeline. docs/pipeline.md explains the executor and the measurements.)\n",
        write_plot(out_dir, runs, o.window, target).c_str(), sec, stages.front());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "delayopt_pipeline_demo: error: %s\n", e.what());
    return 1;
  }
}
