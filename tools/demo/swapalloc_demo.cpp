/**
 * @file swapalloc_demo.cpp
 * @brief The README's main job (tools/run-demo): seed 001's pipeline (SDXL -> BiRefNet ->
 *        Flux inpaint on a 22 GiB device, scaled down by --scale) for --requests requests in
 *        three modes with the same requests, side by side:
 *
 * - keep: every model stays loaded (the seed's auto_unload=False) on a caching allocator
 *   without eviction: request 1 runs out of memory at step 3, and the demo prints
 *   swapalloc's out-of-memory report (the pool table and the advice);
 * - auto_unload: each step loads its model from its file on disk and frees it after (the
 *   seed's fix);
 * - swapalloc: every model stays allocated and the 85/75 policy evicts and restores: the
 *   requests after the first restore from the host store.
 *
 * It prints one line per step (demo_report.hpp), then a summary table comparing the modes
 * and whether their outputs are identical, and writes the timeline (timeline.hpp) for
 * tools/demo/plot_timeline.py. Weights: real ones when weight_source::find finds them (what
 * tools/fetch-weights fetched into <build>/weights, or --weights DIR), tiled and rounded to
 * bf16, else generated; written once to model files (model_files.hpp) that every load reads.
 *
 * On the simulator the device is made the seed's scaled size (SWAPALLOC_SIM_MEMORY, unless
 * set) and --link-gbps sets its link (cudasimSetLinkBandwidth, found with dlsym); on a real
 * GPU a device limit emulates the seed's device.
 *
 * Exit status: 0 every mode ran as expected (keep's out-of-memory is expected) with
 * identical outputs; 1 a failure, a difference or corrupted weights; 2 no usable driver;
 * 64 a bad command line.
 */
#include <swapalloc/driver.hpp>
#include <swapalloc/report.hpp>

#include "demo_options.hpp"
#include "demo_report.hpp"
#include "demo_run.hpp"
#include "model_files.hpp"
#include "pipeline.hpp"
#include "weights.hpp"

#include <cudasim.h>  // the control API's types; its functions are looked up with dlsym
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace {

using namespace swapalloc::demo;  // NOLINT(google-build-using-namespace): the program's own
namespace scenarios = swapalloc::scenarios;

constexpr int exit_failure   = 1;
constexpr int exit_no_driver = 2;
constexpr int exit_usage     = 64;  // EX_USAGE from sysexits.h

constexpr char const* build_dir = SWAPALLOC_BUILD_DIR;

/**
 * Prints the step lines; on a terminal, also a progress bar under them (redrawn after each
 * line, cleared at the end). Plain lines when stdout is not a terminal.
 */
class progress {
 public:
  explicit progress(std::size_t total_steps)
    : terminal_(::isatty(STDOUT_FILENO) == 1 && std::getenv("TERM") != nullptr &&
                std::string(std::getenv("TERM")) != "dumb"),
      total_(total_steps)
  {
  }
  progress(progress const&)            = delete;
  progress& operator=(progress const&) = delete;
  ~progress() { clear(); }

  /// Prints `text` and a newline (above the bar).
  void line(std::string const& text)
  {
    clear();
    std::fputs((text + "\n").c_str(), stdout);
    draw();
  }
  /// One more step done, of mode `mode`.
  void advance(char const* mode)
  {
    ++done_;
    mode_ = mode;
    draw();
  }
  /// Removes the bar (before other output).
  void clear()
  {
    if (terminal_ && drawn_) { std::fputs("\r\033[K", stdout); }
    drawn_ = false;
  }

 private:
  void draw()
  {
    if (!terminal_ || total_ == 0 || mode_.empty()) { return; }
    std::size_t const width = 30;
    std::size_t const full  = width * std::min(done_, total_) / total_;
    std::string const bar   = std::string(full, '#') + std::string(width - full, '.');
    std::fputs(
      format("\r[%s] %zu/%zu steps (%s)", bar.c_str(), done_, total_, mode_.c_str()).c_str(),
      stdout);
    std::fflush(stdout);
    drawn_ = true;
  }

  bool terminal_;
  std::size_t total_;
  std::size_t done_{0};
  std::string mode_;
  bool drawn_{false};
};

/// The device's primary context, retained and current on the main thread for the run.
class primary_context {
 public:
  primary_context(swapalloc::driver const& cuda, CUdevice device) : cuda_(cuda), device_(device)
  {
    cuda_.set_current_context(cuda_.retain_primary_context(device_));
  }
  primary_context(primary_context const&)            = delete;
  primary_context& operator=(primary_context const&) = delete;
  ~primary_context()
  {
    (void)cuda_.table().cuCtxSetCurrent(nullptr);
    (void)cuda_.table().cuDevicePrimaryCtxRelease(device_);
  }

 private:
  swapalloc::driver const& cuda_;
  CUdevice device_;
};

/// The weights: --weights DIR (a bad one is a usage error), else weight_source::find's
/// search from the build directory; a malformed file found there falls back to generated
/// weights, with a warning.
scenarios::weight_source find_weights(demo_options const& opts)
{
  if (!opts.weights_dir.empty()) {
    try {
      return scenarios::weight_source::from_directory(opts.weights_dir);
    } catch (std::exception const& error) {
      throw demo_usage_error("--weights '" + opts.weights_dir.string() +
                             "': expected a directory of *.safetensors or *.fp32.bin weights (" +
                             error.what() + ")");
    }
  }
  try {
    return scenarios::weight_source::find({}, build_dir);
  } catch (std::exception const& error) {
    std::fprintf(stderr, "swapalloc_demo: %s: using generated weights\n", error.what());
    return scenarios::weight_source::generated(7);
  }
}

/// "the cudasim simulator" or "a real CUDA driver", with the library's path and version.
std::string driver_text(swapalloc::driver const& cuda, bool simulated)
{
  int version = 0;
  (void)cuda.table().cuDriverGetVersion(&version);
  return cuda.library() + ": " + (simulated ? "the cudasim simulator" : "a real CUDA driver") +
         format(" (CUDA %d.%d)", version / 1000, version % 1000 / 10);
}

/// Sets the simulator's link; says what the link is.
std::string apply_link(swapalloc::driver const& cuda, bool simulated, demo_options const& opts)
{
  if (!simulated) {
    if (opts.link_gbps) {
      std::fprintf(stderr,
                   "swapalloc_demo: --link-gbps ignored: the real driver's link is the "
                   "hardware's\n");
    }
    return "the GPU's own";
  }
  auto* const set_link = reinterpret_cast<decltype(&cudasimSetLinkBandwidth)>(
    cuda.find_symbol("cudasimSetLinkBandwidth"));
  if (opts.link_gbps && set_link != nullptr) { set_link(*opts.link_gbps); }
  if (!opts.link_gbps || *opts.link_gbps == 0.0) {
    return "simulated, unthrottled (host memcpy speed; --link-gbps sets it)";
  }
  return format("simulated, %.2f GB/s per direction", *opts.link_gbps);
}

/// The codec the model pools use: --codec's, or the library's choice for bf16.
std::string codec_text(std::optional<swapalloc::codec_id> codec)
{
  if (codec) { return std::string(swapalloc::to_string(*codec)); }
  swapalloc::codec_scratch scratch;
  return std::string(swapalloc::to_string(
           swapalloc::choose_codec(swapalloc::dtype_hint::bf16, {}, scratch))) +
         " (the library's choice for bf16 weights)";
}

/// The run's fields of the timeline.
struct run_facts {
  std::string driver;
  bool simulated{false};
  std::string link;
  std::string weights;
  bool real_weights{false};
  std::string files;
  std::string codec;
  std::size_t workers{0};  ///< the allocator's compression threads
};

/// Writes the model files (a pipeline on a throwaway allocator names their chunks).
std::string prepare_files(model_file_store& files, demo_setup const& setup)
{
  swapalloc::allocator scratch(*setup.drv);
  scenarios::scenario_context context;
  context.owner  = &scratch;
  context.drv    = setup.drv;
  context.device = setup.device;
  context.filler = files.filler();
  scenarios::seed001_pipeline pipeline(context, setup.sizes);
  std::size_t written = 0;
  std::size_t bytes   = 0;
  for (scenarios::model const* m : pipeline.models()) {
    written += files.prepare(*m) ? 1 : 0;
    bytes += m->weight_bytes();
  }
  return files.directory().string() + ": " + swapalloc::bytes_text(bytes) +
         (written == 0 ? ", reused (written by an earlier run)"
                       : ", " + std::to_string(written) + " of 3 written now") +
         "; every load reads its file cold (page cache dropped first)";
}

void print_header(demo_options const& opts, demo_setup const& setup, run_facts const& facts)
{
  scenarios::seed001_sizes const& s = setup.sizes;
  std::string modes;
  for (demo_mode const mode : opts.modes) {
    modes += (modes.empty() ? "" : ", ") + std::string(to_string(mode));
  }
  std::printf(
    "swapalloc demo: seed 001 (SDXL -> BiRefNet -> Flux inpaint), %zu requests per "
    "mode: %s\n",
    opts.requests, modes.c_str());
  std::printf("driver   %s\nlink     %s\n", facts.driver.c_str(), facts.link.c_str());
  std::printf("device   the seed's 22 GiB scaled down %zux: %s (the device has %s)\n", opts.scale,
              swapalloc::bytes_text(s.device_bytes).c_str(),
              swapalloc::bytes_text(setup.device_total_bytes).c_str());
  std::printf(
    "models   sdxl %s, birefnet %s, flux-inpaint %s of bf16 weights, each with 1/8 "
    "more for activations\n",
    swapalloc::bytes_text(s.sdxl_bytes).c_str(), swapalloc::bytes_text(s.birefnet_bytes).c_str(),
    swapalloc::bytes_text(s.flux_bytes).c_str());
  std::printf("weights  %s, tiled and rounded to bf16\nfiles    %s\n", facts.weights.c_str(),
              facts.files.c_str());
  std::printf(
    "codec    %s for the host store of swapalloc's evicted pools, %zu compression "
    "worker%s\n",
    facts.codec.c_str(), facts.workers, facts.workers == 1 ? "" : "s");
}

/// What each mode is, printed above its lines.
char const* mode_title(demo_mode mode)
{
  switch (mode) {
    case demo_mode::keep:
      return "every model stays loaded (auto_unload=False), no eviction";
    case demo_mode::auto_unload:
      return "each step loads its model from disk and frees it after (auto_unload=True)";
    case demo_mode::swapalloc:
      return "every model stays allocated; the 85/75 policy evicts and restores";
  }
  return "";
}

/// Prints how a mode's requests ended, when not all ran: keep's out-of-memory report.
void print_ending(mode_result const& r, std::size_t requests)
{
  if (r.completed && r.failure.empty()) { return; }
  if (!r.completed) {
    std::printf("%s: %s. %s:\n", to_string(r.mode), result_text(r, requests).c_str(),
                r.out_of_memory ? "swapalloc's out-of-memory report" : "the error");
  } else {
    std::printf("%s: the requests ran, then:\n", to_string(r.mode));
  }
  std::string failure = r.failure;
  while (!failure.empty() && (failure.back() == '\n' || failure.back() == ' ')) {
    failure.pop_back();
  }
  std::string indented = "    ";
  for (char const c : failure) {
    indented += c;
    if (c == '\n') { indented += "    "; }
  }
  std::printf("%s\n", indented.c_str());
}

/// Whether `r` went as its mode should: keep may run out of memory; the others run every
/// request, and swapalloc's weights come back intact.
bool as_expected(mode_result const& r)
{
  if (r.mode == demo_mode::keep) { return r.completed || r.out_of_memory; }
  return r.completed && r.failure.empty() && r.weights_intact.value_or(true);
}

void write_timeline(std::filesystem::path const& path, demo_options const& opts,
                    demo_setup const& setup, run_facts const& facts,
                    std::vector<mode_result> const& results)
{
  nlohmann::json run = {{"scenario", "seed 001: sdxl -> birefnet -> flux-inpaint"},
                        {"scale", opts.scale},
                        {"requests", opts.requests},
                        {"device_bytes", setup.sizes.device_bytes},
                        {"driver", facts.driver},
                        {"simulated", facts.simulated},
                        {"link", facts.link},
                        {"codec", facts.codec},
                        {"workers", facts.workers},
                        {"weights", facts.weights},
                        {"real_weights", facts.real_weights}};
  std::vector<mode_timeline> timelines;
  for (mode_result const& r : results) {
    timelines.push_back(r.timeline);
    timelines.back().result = result_text(r, opts.requests);
  }
  if (path.has_parent_path()) { std::filesystem::create_directories(path.parent_path()); }
  std::ofstream out(path);
  out << timeline_json(std::move(run), timelines).dump() << "\n";
  if (!out) { throw std::runtime_error(path.string() + ": cannot write the timeline"); }
}

/// Runs the modes; prints their lines, endings and the summary. @return the exit status.
int run_modes(demo_options const& opts, demo_setup const& setup, run_facts const& facts)
{
  std::vector<mode_result> results;
  {
    progress bar(opts.modes.size() * opts.requests * steps_per_request);
    for (demo_mode const mode : opts.modes) {
      bar.line(format("\n== %s: %s\n%s", to_string(mode), mode_title(mode), step_legend));
      results.push_back(run_mode(mode, setup, [&](step_view const& view) {
        bar.line(step_line(view));
        if (view.request != 0) { bar.advance(to_string(view.mode)); }
      }));
      bar.clear();
      print_ending(results.back(), opts.requests);
      if (!results.back().sampler_error.empty()) {
        std::fprintf(stderr, "swapalloc_demo: the timeline's sampling stopped early: %s\n",
                     results.back().sampler_error.c_str());
      }
    }
  }
  std::printf("\n== summary: seed 001, %zu requests, the 22 GiB device scaled down %zux to %s\n",
              opts.requests, opts.scale, swapalloc::bytes_text(setup.sizes.device_bytes).c_str());
  std::fputs(summary_table(results, opts.requests).c_str(), stdout);
  std::filesystem::path const timeline =
    opts.timeline.empty() ? std::filesystem::path(build_dir) / "demo" / "timeline.json"
                          : opts.timeline;
  write_timeline(timeline, opts, setup, facts, results);
  std::printf("timeline: %s\n", timeline.string().c_str());
  bool ok = compare_outputs(results).identical;
  for (mode_result const& r : results) {
    ok = ok && as_expected(r);
  }
  return ok ? 0 : exit_failure;
}

int run_demo(demo_options const& opts)
{
  demo_setup setup;
  setup.sizes    = scenarios::seed001_sizes::scaled_by(opts.scale);
  setup.requests = opts.requests;
  setup.codec    = opts.codec;
  // The simulator reads its capacity once, at cuInit: the seed's device, unless set.
  (void)::setenv("SWAPALLOC_SIM_MEMORY", std::to_string(setup.sizes.device_bytes).c_str(), 0);
  swapalloc::driver const cuda;
  primary_context const context(cuda, cuda.device(0));
  scenarios::weight_source const weights = find_weights(opts);
  setup.drv                              = &cuda;
  setup.device_total_bytes               = cuda.mem_get_info().total;
  run_facts facts;
  facts.simulated    = cuda.find_symbol("cudasimGetCensus") != nullptr;
  facts.driver       = driver_text(cuda, facts.simulated);
  facts.link         = apply_link(cuda, facts.simulated, opts);
  facts.weights      = weights.description();
  facts.real_weights = weights.real();
  facts.codec        = codec_text(opts.codec);
  facts.workers      = swapalloc::resolve_options(swapalloc::allocator_options{}).workers;
  model_file_store files(
    opts.model_dir.empty() ? std::filesystem::path(build_dir) / "demo" / "models" : opts.model_dir,
    weights);
  setup.files = &files;
  facts.files = prepare_files(files, setup);
  print_header(opts, setup, facts);
  return run_modes(opts, setup, facts);
}

}  // namespace

int main(int argc, char** argv)
{
  // Line-buffered even into a pipe or a CI log, so that each step shows when it ends.
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  try {
    demo_options const opts = parse_demo_options(
      std::span<char const* const>(argv + 1, static_cast<std::size_t>(argc > 0 ? argc - 1 : 0)));
    if (opts.help) {
      std::fputs(demo_usage_text, stdout);
      return 0;
    }
    return run_demo(opts);
  } catch (demo_usage_error const& error) {
    std::fprintf(stderr, "swapalloc_demo: %s\n(swapalloc_demo --help lists the options)\n",
                 error.what());
    return exit_usage;
  } catch (swapalloc::driver_unavailable const& error) {
    std::fprintf(stderr, "swapalloc_demo: %s\n", error.what());
    return exit_no_driver;
  } catch (std::exception const& error) {
    std::fprintf(stderr, "swapalloc_demo: %s\n", error.what());
    return exit_failure;
  }
}
