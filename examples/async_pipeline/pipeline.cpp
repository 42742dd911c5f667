// delayopt_pipeline: trains a block MLP (or a character-level MLP language model) in a real
// P-stage pipeline, asynchronous PipeDream 1F1B or synchronous GPipe, over threads or MPI, and
// records the staleness each stage measured, the loss per step and the throughput.
//
//   delayopt_pipeline --transport threads --stages 4 --method adam --steps 1000 --json run.json
//   mpirun -np 4 delayopt_pipeline --transport mpi --stages 4 --method adam --steps 1000 --json run.json
#include "driver.hpp"

#include <json_file.hpp>

#if DELAYOPT_PIPELINE_MPI
#include "transport_mpi.hpp"
#endif

#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>

namespace {

using namespace pipeline;

/// --json is optional.
void write_json(const std::string& path, const nlohmann::json& j) {
  if (!path.empty()) delayopt::tools::write_json(path, j);
}

int run_threads_transport(const RunOptions& o) {
  Kokkos::ScopeGuard guard(kokkos_settings());
  try {
    const auto data = load_data(o);
    const MlpSpec spec = make_spec(o, *data);
    print_header(o, spec, *data);
    Progress progress("", o.steps, o.progress_every, o.window);
    const RunResult r = run_on_threads(o, spec, data, std::ref(progress));
    const auto j = to_json(o, spec, *data, r);
    print_summary(j);
    write_json(o.json, j);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "delayopt_pipeline: error: %s\n", e.what());
    return 1;
  }
}

#if DELAYOPT_PIPELINE_MPI
/// The per-rank line of a failed job: every rank prints one, so a log shows that all of them
/// stopped and finalized MPI rather than being killed.
void print_shutdown(int rank, RankStatus mine, const MpiOutcome& o) {
  const std::string failed = o.failed_ranks();
  std::string why = mine == RankStatus::failed ? "this stage failed"
                    : failed.empty()           ? "another rank failed to set up"
                                               : "stage " + failed + " failed";
  if (mine == RankStatus::ok) why = "its schedule completed, but " + why;
  std::fprintf(stderr, "delayopt_pipeline: rank %d shut down: %s; channels drained, finalizing MPI\n", rank,
               why.c_str());
  std::fflush(stderr);
}

/// One rank per stage. Rank 0 gathers every stage's report and writes the JSON. A rank whose stage
/// throws prints its error and notifies the others (MpiControl); ranks waiting on it stop, every
/// rank meets in MpiControl::agree, drains its channels, calls MPI_Finalize and exits with 1.
int run_mpi_transport(int argc, char* argv[], const RunOptions& o) {
  MPI_Init(&argc, &argv);
  int rank = 0, size = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (size != o.stages) {
    if (rank == 0)
      std::fprintf(stderr,
                   "delayopt_pipeline: --transport mpi needs one rank per stage: run it as mpirun -np %d ... "
                   "(this job has %d rank%s)\n",
                   o.stages, size, size == 1 ? "" : "s");
    MPI_Finalize();
    return 2;
  }
  int exit_code = 0;
  {
    Kokkos::ScopeGuard guard(kokkos_settings());
    MpiControl control(MPI_COMM_WORLD);
    auto report = [&](const char* when, const char* what, const char* then) {
      std::fprintf(stderr, "delayopt_pipeline: error: pipeline stage %d (rank %d) failed%s: %s%s\n", rank, rank, when,
                   what, then);
      std::fflush(stderr);
    };
    RankStatus status = RankStatus::ok;
    std::shared_ptr<const Dataset> data;
    std::optional<MlpSpec> spec;
    std::optional<Runner> runner;
    std::optional<MpiEndpoint<Real>> ep;
    // Set-up communicates nothing, so a rank that fails here just says so at the first collective.
    try {
      data = load_data(o);
      spec = make_spec(o, *data);
      if (rank == 0) print_header(o, *spec, *data);
      runner.emplace(make_runner(o, *spec, data, rank));
      ep.emplace(control, MPI_COMM_WORLD, rank, size, runner->model().input_size(), runner->model().output_size(),
                 runner->config().total_microbatches(), static_cast<int>(o.queue_capacity));
    } catch (const std::exception& e) {
      report(" to set up", e.what(), "");
      status = RankStatus::failed;
    }
    StageReport mine;
    double t0 = 0;
    if (control.all_ready(status == RankStatus::ok)) {  // also the start line for the timing
      t0 = MPI_Wtime();
      try {
        Progress progress("", o.steps, o.progress_every, o.window);
        mine = runner->run(*ep, runner->is_last() ? LossCallback(std::ref(progress)) : LossCallback());
      } catch (const pipeline_aborted&) {
        status = RankStatus::aborted;  // another rank failed and said so
      } catch (const std::exception& e) {
        report("", e.what(), "; notifying the other ranks");
        status = RankStatus::failed;
        control.notify_failure();
      }
    } else if (status == RankStatus::ok) {
      status = RankStatus::aborted;
    }
    // Every rank gets here, whatever happened: agree, then leave nothing in flight.
    const MpiOutcome outcome = control.agree(status, ep ? ep->sent_forward() : 0, ep ? ep->sent_backward() : 0);
    const double seconds = MPI_Wtime() - t0;
    if (ep) ep->drain(outcome);
    control.finish(outcome);
    if (!outcome.ok()) {
      print_shutdown(rank, status, outcome);
      exit_code = 1;
    } else {
      try {
        // Gather: staleness (N ints per stage), stash counts and hashes; the loss from the last rank.
        const int N = static_cast<int>(o.steps);
        std::vector<int> staleness(rank == 0 ? static_cast<std::size_t>(N * size) : 0);
        MPI_Gather(mine.staleness.data(), N, MPI_INT, staleness.data(), N, MPI_INT, 0, MPI_COMM_WORLD);
        unsigned long long info[2] = {mine.stashed_versions, mine.param_hash};
        std::vector<unsigned long long> infos(static_cast<std::size_t>(2 * size));
        MPI_Gather(info, 2, MPI_UNSIGNED_LONG_LONG, infos.data(), 2, MPI_UNSIGNED_LONG_LONG, 0, MPI_COMM_WORLD);
        std::vector<double> loss = mine.loss;
        if (size > 1 && rank == size - 1) MPI_Send(loss.data(), N, MPI_DOUBLE, 0, 99, MPI_COMM_WORLD);
        if (size > 1 && rank == 0) {
          loss.resize(static_cast<std::size_t>(N));
          MPI_Recv(loss.data(), N, MPI_DOUBLE, size - 1, 99, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        }
        if (rank == 0) {
          RunResult r;
          r.seconds = seconds;
          for (int i = 0; i < size; ++i) {
            StageReport s;
            s.stage = i;
            s.staleness.assign(staleness.begin() + i * N, staleness.begin() + (i + 1) * N);
            s.stashed_versions = static_cast<std::size_t>(infos[static_cast<std::size_t>(2 * i)]);
            s.param_hash = infos[static_cast<std::size_t>(2 * i + 1)];
            s.updates = o.steps;
            if (i == size - 1) s.loss = loss;
            r.stages.push_back(std::move(s));
          }
          const auto j = to_json(o, *spec, *data, r);
          print_summary(j);
          write_json(o.json, j);
        }
      } catch (const std::exception& e) {  // only local work is left to fail (rank 0's JSON)
        std::fprintf(stderr, "delayopt_pipeline: error: rank %d: %s\n", rank, e.what());
        exit_code = 1;
      }
    }
  }  // the stage's views are gone before Kokkos finalizes
  MPI_Finalize();
  return exit_code;
}
#endif

}  // namespace

int main(int argc, char* argv[]) {
  RunOptions o;
  CLI::App app{
      "delayopt_pipeline: train a model in a real asynchronous (PipeDream 1F1B) or synchronous (GPipe) "
      "pipeline over threads or MPI; see docs/pipeline.md"};
  add_options(app, o);
  CLI11_PARSE(app, argc, argv);
  try {
    check_options(app, o);
    (void)make_config(o);  // parses --inject-failure
    if (!o.json.empty() && !delayopt::tools::can_write_json(o.json))
      throw std::invalid_argument("cannot write --json " + o.json);
  } catch (const std::invalid_argument& e) {
    std::fprintf(stderr, "delayopt_pipeline: %s\n", e.what());
    return 2;
  }
  setenv("OMP_PROC_BIND", "false", 0);  // one OpenMP thread (kokkos_settings): binding is moot; keeps Kokkos quiet
  if (o.transport == "threads") return run_threads_transport(o);
#if DELAYOPT_PIPELINE_MPI
  return run_mpi_transport(argc, argv, o);
#else
  std::fprintf(stderr, "delayopt_pipeline: this build has no MPI transport (install libopenmpi-dev, reconfigure)\n");
  return 2;
#endif
}
