#include "slimbert/train/checkpointing.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <iostream>

#include "slimbert/core/dist.h"
#include "slimbert/core/error.h"
#include "slimbert/core/fs.h"
#include "slimbert/core/json.h"
#include "slimbert/core/runtime.h"

namespace fs = std::filesystem;

namespace slimbert {
namespace {

at::Generator cuda_generator() {
  return at::globalContext().defaultGenerator(compute_device());
}

}  // namespace

std::string checkpoint_dir(const std::string& out_dir, int64_t step) {
  char name[32];
  std::snprintf(name, sizeof(name), "step-%07lld", static_cast<long long>(step));
  return (fs::path(out_dir) / "checkpoints" / name).string();
}

namespace {

// Finished checkpoint directories under OUT/checkpoints, oldest first (staging dirs excluded).
std::vector<std::string> checkpoint_dirs(const std::string& out_dir) {
  std::vector<std::string> dirs;
  const fs::path dir = fs::path(out_dir) / "checkpoints";
  if (!fs::is_directory(dir)) return dirs;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("step-", 0) == 0 && name.find(".tmp") == std::string::npos)
      dirs.push_back(e.path().string());
  }
  std::sort(dirs.begin(), dirs.end());  // step numbers are zero-padded
  return dirs;
}

}  // namespace

std::string latest_checkpoint(const std::string& out_dir) {
  const auto dirs = checkpoint_dirs(out_dir);
  for (auto it = dirs.rbegin(); it != dirs.rend(); ++it)
    if (fs::exists(fs::path(*it) / "trainer_state" / "state.json")) return *it;
  return "";
}

void save_training_checkpoint(const std::string& out_dir, const TrainerCursor& cursor,
                              const RunSignature& run, const nlohmann::json& extra,
                              const BertConfig& config, const torch::nn::Module& model,
                              const Tokenizer& tokenizer, const AdamW& optimizer,
                              int64_t keep_last) {
  // Each rank's dropout stream: rank 0's as "torch_cpu", the others' as "torch_cpu.rank<r>".
  const at::Tensor cpu_state = at::detail::getDefaultCPUGenerator().get_state();
  std::vector<at::Tensor> rank_states;
  if (distributed()) {
    // Gathered on the compute device: NCCL moves device tensors only.
    for (const at::Tensor& s : all_gather(cpu_state.to(compute_device())))
      rank_states.push_back(s.cpu());
    if (!is_main_rank()) return;
  }
  // In the training precision: a float64 run resumes bit for bit.
  SaveOptions precision;
  precision.float_dtype = from_scalar(parameter_dtype(model), "the model's parameters");
  write_dir_atomic(checkpoint_dir(out_dir, cursor.step), [&](const std::string& staging) {
    write_checkpoint_files(staging, config, model, tokenizer, precision);
    const std::string state_dir = staging + "/trainer_state";
    fs::create_directories(state_dir);
    save_safetensors(state_dir + "/optimizer.safetensors", optimizer.state(),
                     precision.float_dtype);
    TensorMap rng = {{"torch_cpu", cpu_state}};
    for (size_t r = 1; r < rank_states.size(); ++r)
      rng["torch_cpu.rank" + std::to_string(r)] = rank_states[r];
    // A GPU run's dropout draws from the device's generator: saved too, for exact resume.
    if (compute_device().is_cuda()) rng["torch_cuda"] = cuda_generator().get_state();
    save_safetensors(state_dir + "/rng.safetensors", rng);
    write_file_atomic(state_dir + "/state.json",
                      json_text(trainer_state_json(cursor, run, extra), 2) + "\n");
  });
  const std::vector<std::string> all = checkpoint_dirs(out_dir);
  for (size_t i = 0; i + static_cast<size_t>(std::max<int64_t>(1, keep_last)) < all.size(); ++i)
    if (!remove_tree(all[i]))
      fail(all[i], ": cannot remove an old checkpoint: ", std::strerror(errno));
}

ResumedState load_training_state(const std::string& dir, const RunSignature& run,
                                 const StateLimits& limits, AdamW& optimizer,
                                 at::ScalarType float_type) {
  const std::string state_dir = (fs::path(dir) / "trainer_state").string();
  const std::string state_path = state_dir + "/state.json";
  ResumedState resumed;
  resumed.state = read_json_file(state_path);
  std::vector<std::string> notes;
  resumed.cursor = read_trainer_state(resumed.state, run, limits, state_path, &notes);
  if (is_main_rank())
    for (const auto& n : notes) std::cerr << run.command << ": " << state_path << ": " << n << "\n";
  optimizer.load_state(load_safetensors(state_dir + "/optimizer.safetensors", float_type),
                       state_dir);
  const TensorMap rng = load_safetensors(state_dir + "/rng.safetensors");
  const int rank = dist().rank;
  const std::string key = rank == 0 ? "torch_cpu" : "torch_cpu.rank" + std::to_string(rank);
  at::Generator gen = at::detail::getDefaultCPUGenerator();
  if (!rng.count(key)) {
    if (rank == 0) fail(state_dir, "/rng.safetensors: no 'torch_cpu' state");
    // A run resumed on more ranks than it was saved by: the data order and the global batch
    // are the same, this rank's dropout is not.
    std::cerr << state_dir << ": saved by fewer ranks; rank " << rank
              << " continues with a dropout stream of its own (not bit for bit)\n";
  } else {
    const at::Tensor cpu_state = rng.at(key).to(at::kByte);
    const int64_t expected = gen.get_state().numel();
    if (cpu_state.dim() != 1 || cpu_state.numel() != expected)
      fail(state_dir, "/rng.safetensors: '", key, "' holds ", cpu_state.numel(),
           " bytes, expected a generator state of ", expected);
    gen.set_state(cpu_state);
  }
  if (compute_device().is_cuda()) {
    // A CPU checkpoint resumed on a GPU (or the reverse) continues, but not bit for bit.
    if (rng.count("torch_cuda"))
      cuda_generator().set_state(rng.at("torch_cuda").to(at::kByte));
    else
      std::cerr << state_dir << ": no CUDA generator state (saved by a CPU run); dropout on the "
                << "GPU continues from its own seed\n";
  }
  return resumed;
}

void remove_stale_checkpoint_staging(const std::string& out_dir) {
  // OUT holds the staging of best/, model/ and metrics rewrites; OUT/checkpoints that of steps.
  for (const fs::path& dir : {fs::path(out_dir), fs::path(out_dir) / "checkpoints"})
    for (const std::string& removed : remove_stale_staging(dir.string()))
      std::cerr << removed << ": removed (left by a run killed while writing it)\n";
}

double clip_grad_norm(torch::nn::Module& module, double max_norm) {
  std::vector<at::Tensor> squares;
  for (const auto& p : module.parameters())
    if (p.grad().defined()) squares.push_back(p.grad().pow(2).sum());
  if (squares.empty()) return 0;
  const double norm = std::sqrt(at::stack(squares).sum().item<double>());
  if (max_norm > 0 && norm > max_norm)
    for (auto& p : module.parameters())
      if (p.grad().defined()) p.mutable_grad().mul_(max_norm / (norm + 1e-6));
  return norm;
}

at::ScalarType parameter_dtype(const torch::nn::Module& module) {
  for (const auto& p : module.parameters())
    if (p.is_floating_point()) return p.scalar_type();
  return at::kFloat;
}

std::vector<std::pair<std::string, at::Tensor>> named_parameters(torch::nn::Module& module) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (auto& p : module.named_parameters()) out.emplace_back(p.key(), p.value());
  return out;
}

void require_writable_dir(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec || access(dir.c_str(), W_OK) != 0)
    fail(dir, ": output directory cannot be created or written",
         ec ? ": " + ec.message() : std::string());
}

}  // namespace slimbert
