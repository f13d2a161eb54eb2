// GPU parity: the same weights, batches and training give the same numbers on a CUDA device as on
// the CPU: forward at every sub-network and HF's golden outputs (1e-5), and the loss curves of
// MLM pretraining and fine-tuning (1e-4 relative), also of a run resumed on the GPU. Skipped where
// libtorch has no CUDA or there is no GPU (CI); the DynaBERT and WID stages have their own GPU
// tests beside their CPU ones.
#include <ATen/ATen.h>

#include "mlm_world.h"
#include "slimbert/infer/run.h"
#include "slimbert/io/checkpoint.h"
#include "slimbert/model/flops.h"
#include "slimbert/train/finetune.h"
#include "test_util.h"

namespace slimbert {
namespace {

using test::OnDevice;
using test::TempDir;

const c10::Device kGpu(c10::kCUDA, 0);

using test::max_diff;

TEST(Device, UnknownOrUnavailableDevicesAreClearErrors) {
  EXPECT_ERROR_CONTAINS(parse_device("tpu"), "'tpu' is not a device");
  EXPECT_ERROR_CONTAINS(parse_device("cuda:x"), "is not a device");
  EXPECT_EQ(parse_device("cpu"), c10::Device(c10::kCPU));
  if (!at::hasCUDA()) {
    EXPECT_ERROR_CONTAINS(parse_device("cuda"), "--device cuda", "no CUDA support");
  } else {
    EXPECT_EQ(parse_device("cuda"), kGpu);
    EXPECT_ERROR_CONTAINS(parse_device("cuda:99"), "GPU(s) visible");
  }
}

TEST(Device, ForwardOnTheGpuEqualsTheCpuAndHuggingFace) {
  SKIP_WITHOUT_CUDA();
  const std::string dir = test::fixture("hf/model");
  const TensorMap golden = load_safetensors(dir + "/outputs.safetensors");
  const Batch batch{golden.at("input_ids"), golden.at("token_type_ids"),
                    golden.at("attention_mask")};
  BertForSequenceClassification cpu = load_classifier(dir);
  BertForSequenceClassification gpu = [&] {
    OnDevice on(kGpu);
    return load_classifier(dir);
  }();
  ASSERT_TRUE(gpu->classifier->weight.is_cuda());
  at::NoGradGuard no_grad;
  const Encoded full = gpu->bert->forward(batch);  // the batch moves to the model's device
  EXPECT_LE(max_diff(full.last(), golden.at("last_hidden_state")), 1e-5);
  EXPECT_LE(max_diff(full.pooled, golden.at("pooler_output")), 1e-5);
  EXPECT_LE(max_diff(gpu->logits(full), golden.at("cls_logits")), 1e-5);
  for (double w : {1.0, 0.75, 0.5, 0.25})
    for (double d : {1.0, 0.75, 0.5}) {
      const SubNet s{w, d};
      EXPECT_LE(max_diff(cpu->forward(batch, s), gpu->forward(batch, s)), 1e-5)
          << "width " << w << " depth " << d;
    }
  const auto fast = [&] {
    OnDevice on(kGpu);
    return infer::InferenceModel::load(dir);
  }();
  EXPECT_LE(max_diff(fast->forward(batch).logits, golden.at("cls_logits")), 1e-5);
  const infer::Latency l = infer::measure_latency(*fast, 2, 16, SubNet{0.5, 0.5}, 3, 1);
  EXPECT_GT(l.p50, 0);
}

// A two-class task over the synthetic world's words.
std::string toy_task(const TempDir& dir) {
  const std::string d = dir / "task";
  std::filesystem::create_directories(d);
  for (const std::string split : {"train", "dev"}) {
    std::string text = "sentence\tlabel\n";
    for (int i = 0; i < (split == "train" ? 96 : 32); ++i) {
      const bool low = (i * 7 + (split == "dev")) % 2 == 0;
      std::string s;
      for (int k = 0; k < 5; ++k)
        s += "w" + std::to_string((low ? 0 : 20) + (i + k * 5) % 10) + " ";
      text += s + "\t" + (low ? "low" : "high") + "\n";
    }
    write_file_atomic(d + "/" + split + ".tsv", text);
  }
  return d;
}

TEST(Device, FinetuningOnTheGpuEqualsTheCpu) {
  SKIP_WITHOUT_CUDA();
  TempDir dir;
  FinetuneOptions o;
  o.model_dir = test::without_dropout(test::world().init, dir / "init");
  o.task = "tsv";
  o.data_dir = toy_task(dir);
  o.epochs = 2;
  o.batch_size = 16;
  o.max_length = 16;
  o.lr = 2e-3;
  o.log_every = 4;
  FinetuneOptions on_cpu = o, on_gpu = o;
  on_cpu.out_dir = dir / "cpu";
  on_gpu.out_dir = dir / "gpu";
  const FinetuneResult a = finetune(on_cpu);
  const FinetuneResult b = [&] {
    OnDevice on(kGpu);
    return finetune(on_gpu);
  }();
  ASSERT_TRUE(a.finished && b.finished);
  test::expect_same_losses(on_cpu.out_dir, on_gpu.out_dir, 1e-4);
}

TEST(Device, PretrainingOnTheGpuEqualsTheCpuAndResumesExactly) {
  SKIP_WITHOUT_CUDA();
  TempDir dir;
  const test::World& w = test::world();
  PretrainOptions o = w.options("unused");
  o.init_dir = test::without_dropout(w.init, dir / "init");
  PretrainOptions on_cpu = o, on_gpu = o;
  on_cpu.out_dir = dir / "cpu";
  on_gpu.out_dir = dir / "gpu";
  pretrain(on_cpu);
  OnDevice on(kGpu);
  pretrain(on_gpu);
  test::expect_same_losses(on_cpu.out_dir, on_gpu.out_dir, 1e-4);

  // With dropout on, a run stopped and resumed on the GPU continues its random stream.
  PretrainOptions straight = w.options("gpu-straight");
  pretrain(straight);
  PretrainOptions split = w.options("gpu-split");
  split.stop_after = 4;
  EXPECT_FALSE(pretrain(split).finished);
  split.stop_after = 0;
  split.resume = true;
  EXPECT_TRUE(pretrain(split).finished);
  // Atomic adds in some GPU kernels reorder sums: equal up to rounding, not bit for bit. A
  // dropout stream that did not continue would change the losses by percents.
  test::expect_same_losses(straight.out_dir, split.out_dir, 1e-4);
}

}  // namespace
}  // namespace slimbert
