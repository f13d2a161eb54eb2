#include "slimbert/infer/model.h"

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/native/quantized/PackedParams.h>
#include <c10/core/InferenceMode.h>
#if SLIMBERT_HAVE_DNNL
#include <oneapi/dnnl/dnnl.hpp>
#endif
#include <malloc.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <iostream>
#include <limits>
#include <map>
#include <mutex>

#include "slimbert/core/error.h"
#include "slimbert/core/runtime.h"
#include "slimbert/infer/latency.h"
#include "slimbert/io/checkpoint.h"
#include "slimbert/io/tensor_io.h"
#include "slimbert/model/history.h"
#include "slimbert/model/names.h"

namespace slimbert::infer {

Gemm parse_gemm(const std::string& name) {
  if (name == "auto") return Gemm::kAuto;
  if (name == "openblas" || name == "blas") return Gemm::kBlas;
  if (name == "onednn") return Gemm::kOnednn;
  fail("--gemm must be auto, openblas or onednn, got '", name, "'");
}

const char* gemm_name(Gemm gemm) {
  switch (gemm) {
    case Gemm::kAuto:
      return "auto";
    case Gemm::kBlas:
      return "openblas";
    case Gemm::kOnednn:
      return "onednn";
  }
  return "?";
}

bool select_int8_engine() {
  static const bool ok = [] {
    const auto& engines = at::globalContext().supportedQEngines();
    // oneDNN runs int8 GEMMs about twice as fast as OpenBLAS runs fp32 ones on these CPUs;
    // QNNPACK, the other engine of Debian's build, is slower than fp32 (ENVIRONMENT.md).
    for (at::QEngine e : engines)
      if (e == at::QEngine::ONEDNN) {
        at::globalContext().setQEngine(e);
        return true;
      }
    return false;
  }();
  return ok;
}

ActivationQuantization quantize_activations(const at::Tensor& x, int64_t max_level) {
  const auto [lo, hi] = at::aminmax(x);
  const double low = std::min(0.0, lo.item<double>()), high = std::max(0.0, hi.item<double>());
  const double levels = static_cast<double>(max_level);
  ActivationQuantization a;
  a.scale = high > low ? (high - low) / levels : 1.0;
  a.zero_point = std::clamp<int64_t>(std::llround(-low / a.scale), 0, max_level);
  // Vectorised passes: at::quantize_per_tensor took 10x as long here, on one thread.
  at::Tensor q = x * (1.0 / a.scale);
  q.add_(static_cast<double>(a.zero_point)).round_().clamp_(0, levels);
  a.values = q.to(at::kByte);
  return a;
}

namespace {

// Dynamically quantized: int8 weights quantized per output row, the activations quantized per
// call from their range; the bias stays fp32.
class Int8Linear : public PackedLinear {
 public:
  Int8Linear(const at::Tensor& weight, const at::Tensor& bias) {
    const at::Tensor w = weight.contiguous();
    // Symmetric per-row scales: the largest magnitude of a row maps to 127.
    const at::Tensor scales =
        w.abs().amax(1).clamp_min(1e-8).div(127.0).to(at::kDouble).contiguous();
    const at::Tensor zeros = at::zeros({w.size(0)}, at::kLong);
    const at::Tensor q = at::quantize_per_channel(w, scales, zeros, 0, at::kQInt8);
    static const auto prepack = c10::Dispatcher::singleton()
                                    .findSchemaOrThrow("quantized::linear_prepack", "")
                                    .typed<c10::intrusive_ptr<LinearPackedParamsBase>(
                                        at::Tensor, c10::optional<at::Tensor>)>();
    packed_ = prepack.call(
        q, bias.defined() ? c10::optional<at::Tensor>(bias.contiguous()) : c10::nullopt);
    rows_ = w.size(0);
    cols_ = w.size(1);
  }
  at::Tensor operator()(const at::Tensor& x) const override {
    auto sizes = x.sizes().vec();
    const at::Tensor y = packed_->apply_dynamic(x.reshape({-1, cols_}).contiguous());
    sizes.back() = rows_;
    return y.view(sizes);
  }
  int64_t bytes() const override { return rows_ * cols_ + rows_ * 12; }  // weights, scale, bias

 private:
  c10::intrusive_ptr<LinearPackedParamsBase> packed_;
  int64_t rows_ = 0, cols_ = 0;
};

#if SLIMBERT_HAVE_DNNL
bool int8_products_saturate() {
  __builtin_cpu_init();
  return !(__builtin_cpu_supports("avx512vnni") || __builtin_cpu_supports("avxvnni"));
}

const dnnl::engine& dnnl_engine() {
  static const dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

// `weights` (laid out as `plain` says) reordered once into the layout a kernel reads.
dnnl::memory packed_copy(const dnnl::memory::desc& plain, const at::Tensor& weights,
                         const dnnl::memory::desc& packed) {
  dnnl::memory from(plain, dnnl_engine(), weights.data_ptr()), to(packed, dnnl_engine());
  dnnl::stream s(dnnl_engine());
  dnnl::reorder(from, to).execute(s, from, to);
  s.wait();
  return to;
}

// Primitives per number of input rows, a few kept; callers share a model across threads.
template <typename Primitive>
class PrimitiveCache {
 public:
  Primitive get(int64_t rows, const std::function<Primitive()>& make) const {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = primitives_.find(rows);
    if (it != primitives_.end()) return it->second;
    if (primitives_.size() >= kKept) primitives_.erase(primitives_.begin());
    return primitives_.emplace(rows, make()).first->second;
  }

 private:
  static constexpr size_t kKept = 16;
  mutable std::mutex mutex_;
  mutable std::map<int64_t, Primitive> primitives_;
};

// int8 through oneDNN's matmul, called directly: u8 activations (quantized per call over their
// range, zero included) times s8 weights (per output row, symmetric, reordered once at load into
// the kernel's layout; VNNI's u8 x s8 products). oneDNN scales the output by the weights'
// scales (constant: its fast kernels take no scales given per call); the activations' scale and
// zero point are applied afterwards, in one pass with the bias, through the weights' row sums:
// y = s_x s_w[n] (sum_k q_x[k] q_w[n, k] - z_x sum_k q_w[n, k]) + b[n].
//
// Without VNNI, x86 multiplies u8 by s8 in pairs summed into a saturating int16 (vpmaddubsw):
// 255 x 127 x 2 overflows it, so there the activations take 7 bits (127 x 127 x 2 fits), as
// PyTorch's reduce_range does.
class OnednnInt8Linear : public PackedLinear {
 public:
  OnednnInt8Linear(const at::Tensor& weight, const at::Tensor& bias)
      : rows_(weight.size(0)), cols_(weight.size(1)) {
    const at::Tensor w = weight.contiguous().to(at::kFloat);
    weight_scale_ = w.abs().amax(1).clamp_min(1e-8).div(127.0);
    const at::Tensor q =
        at::round(w / weight_scale_.unsqueeze(1)).clamp(-127, 127).to(at::kChar).contiguous();
    row_sums_ = q.sum(1, false, at::kFloat);
    const at::Tensor scales = weight_scale_.contiguous();
    column_scales_.assign(scales.data_ptr<float>(), scales.data_ptr<float>() + rows_);
    bias_ = bias.defined() ? bias.contiguous().to(at::kFloat) : at::zeros({rows_});
    weights_desc_ = describe(kPackRows, true).weights_desc();
    // (in, out) stored out-major: q's own (out, in) rows.
    packed_ =
        packed_copy({{cols_, rows_}, dnnl::memory::data_type::s8, dnnl::memory::format_tag::ba}, q,
                    weights_desc_);
  }
  at::Tensor operator()(const at::Tensor& x) const override {
    auto sizes = x.sizes().vec();
    const at::Tensor in = x.reshape({-1, cols_}).contiguous();
    const int64_t m = in.size(0);
    at::Tensor y = at::empty({m, rows_}, in.options());
    if (m > 0) {
      static const int64_t max_level = int8_products_saturate() ? 127 : 255;
      const ActivationQuantization a = quantize_activations(in, max_level);
      const at::Tensor shift =
          bias_ - weight_scale_ * (a.scale * static_cast<double>(a.zero_point)) * row_sums_;
      const dnnl::memory::desc src_md({m, cols_}, dnnl::memory::data_type::u8,
                                      dnnl::memory::format_tag::ab);
      const dnnl::memory::desc dst_md({m, rows_}, dnnl::memory::data_type::f32,
                                      dnnl::memory::format_tag::ab);
      dnnl::memory src(src_md, dnnl_engine(), a.values.data_ptr());
      dnnl::memory dst(dst_md, dnnl_engine(), y.data_ptr());
      dnnl::stream s(dnnl_engine());
      primitives_.get(m, [&] { return dnnl::matmul(describe(m, false)); })
          .execute(s, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, packed_}, {DNNL_ARG_DST, dst}});
      s.wait();
      at::add_out(y, shift, y, a.scale);  // shift + s_x y
    }
    sizes.back() = rows_;
    return y.view(sizes);
  }
  int64_t bytes() const override { return rows_ * cols_ + rows_ * 12; }  // weights, scale, bias

 private:
  static constexpr int64_t kPackRows = 128;  // the layout is chosen for a 128-row input

  dnnl::matmul::primitive_desc describe(int64_t m, bool any_layout) const {
    const dnnl::memory::desc src({m, cols_}, dnnl::memory::data_type::u8,
                                 dnnl::memory::format_tag::ab);
    const dnnl::memory::desc dst({m, rows_}, dnnl::memory::data_type::f32,
                                 dnnl::memory::format_tag::ab);
    const dnnl::memory::desc weights =
        any_layout ? dnnl::memory::desc({cols_, rows_}, dnnl::memory::data_type::s8,
                                        dnnl::memory::format_tag::any)
                   : weights_desc_;
    dnnl::primitive_attr attr;
    attr.set_output_scales(1 << 1, column_scales_);  // the weights' own, one per output column
    try {
      return {dnnl::matmul::desc(src, weights, dst), attr, dnnl_engine()};
    } catch (const dnnl::error& e) {
      fail("--int8: oneDNN has no int8 kernel for ", m, " rows x ", cols_, " -> ", rows_, " (",
           e.what(), ")");
    }
  }

  int64_t rows_ = 0, cols_ = 0;
  at::Tensor weight_scale_, row_sums_, bias_;  // (out)
  std::vector<float> column_scales_;           // weight_scale_, for the primitives
  dnnl::memory::desc weights_desc_;
  dnnl::memory packed_;
  PrimitiveCache<dnnl::matmul> primitives_;
};

// fp32 through oneDNN's inner product, called directly: its kernels use the CPU's widest
// vectors (AVX-512 where OpenBLAS may be pinned to AVX2), and the weights are reordered once, at
// load, into the blocked layout the kernel reads. (libtorch's mkldnn_linear reorders them on
// every call, which cost it about half its speed.) A primitive is built per number of input
// rows and kept, a few per map.
class OnednnLinear : public PackedLinear {
 public:
  OnednnLinear(const at::Tensor& weight, const at::Tensor& bias)
      : bias_(bias.contiguous()), rows_(weight.size(0)), cols_(weight.size(1)) {
    const at::Tensor w = weight.contiguous();
    const dnnl::inner_product_forward::primitive_desc pd = describe(kPackRows, true);
    weights_desc_ = pd.weights_desc();
    packed_ =
        packed_copy({{rows_, cols_}, dnnl::memory::data_type::f32, dnnl::memory::format_tag::oi}, w,
                    weights_desc_);
  }
  at::Tensor operator()(const at::Tensor& x) const override {
    auto sizes = x.sizes().vec();
    const at::Tensor in = x.reshape({-1, cols_}).contiguous();
    const int64_t m = in.size(0);
    at::Tensor y = at::empty({m, rows_}, in.options());
    if (m > 0) {
      const dnnl::memory::desc src_md({m, cols_}, dnnl::memory::data_type::f32,
                                      dnnl::memory::format_tag::nc);
      const dnnl::memory::desc dst_md({m, rows_}, dnnl::memory::data_type::f32,
                                      dnnl::memory::format_tag::nc);
      dnnl::memory src(src_md, dnnl_engine(), in.data_ptr()),
          dst(dst_md, dnnl_engine(), y.data_ptr());
      dnnl::memory bias(bias_desc(), dnnl_engine(), bias_.data_ptr());
      dnnl::stream s(dnnl_engine());
      primitive(m).execute(s, {{DNNL_ARG_SRC, src},
                               {DNNL_ARG_WEIGHTS, packed_},
                               {DNNL_ARG_BIAS, bias},
                               {DNNL_ARG_DST, dst}});
      s.wait();
    }
    sizes.back() = rows_;
    return y.view(sizes);
  }
  int64_t bytes() const override { return (rows_ * cols_ + rows_) * 4; }

 private:
  static constexpr int64_t kPackRows = 128;  // the layout is chosen for a 128-row input

  dnnl::memory::desc bias_desc() const {
    return {{rows_}, dnnl::memory::data_type::f32, dnnl::memory::format_tag::a};
  }
  // With `any_layout` the kernel picks the weights' layout; otherwise it reads the packed one.
  dnnl::inner_product_forward::primitive_desc describe(int64_t m, bool any_layout) const {
    const dnnl::memory::desc src({m, cols_}, dnnl::memory::data_type::f32,
                                 dnnl::memory::format_tag::nc);
    const dnnl::memory::desc dst({m, rows_}, dnnl::memory::data_type::f32,
                                 dnnl::memory::format_tag::nc);
    const dnnl::memory::desc weights =
        any_layout ? dnnl::memory::desc({rows_, cols_}, dnnl::memory::data_type::f32,
                                        dnnl::memory::format_tag::any)
                   : weights_desc_;
    try {
      return {{dnnl::prop_kind::forward_inference, src, weights, bias_desc(), dst}, dnnl_engine()};
    } catch (const dnnl::error& e) {
      fail("--gemm onednn: oneDNN has no fp32 kernel for ", m, " rows x ", cols_, " -> ", rows_,
           " (", e.what(), "); --gemm openblas runs every shape");
    }
  }
  dnnl::inner_product_forward primitive(int64_t m) const {
    return primitives_.get(m, [&] { return dnnl::inner_product_forward(describe(m, false)); });
  }

  at::Tensor bias_;
  int64_t rows_ = 0, cols_ = 0;
  dnnl::memory::desc weights_desc_;
  dnnl::memory packed_;
  PrimitiveCache<dnnl::inner_product_forward> primitives_;
};
#else
// fp32 through oneDNN (libtorch's mkldnn_linear; this build found no oneDNN headers to call it
// directly): it picks the CPU's widest vector kernels itself.
class OnednnLinear : public PackedLinear {
 public:
  OnednnLinear(const at::Tensor& weight, const at::Tensor& bias)
      : weight_(weight.contiguous().to_mkldnn()),
        bias_(bias.contiguous()),
        rows_(weight.size(0)),
        cols_(weight.size(1)) {}
  at::Tensor operator()(const at::Tensor& x) const override {
    auto sizes = x.sizes().vec();
    const at::Tensor y =
        at::mkldnn_linear(x.reshape({-1, cols_}).contiguous().to_mkldnn(), weight_, bias_)
            .to_dense();
    sizes.back() = rows_;
    return y.view(sizes);
  }
  int64_t bytes() const override { return (rows_ * cols_ + rows_) * 4; }

 private:
  at::Tensor weight_, bias_;
  int64_t rows_ = 0, cols_ = 0;
};
#endif

}  // namespace

std::shared_ptr<const PackedLinear> pack_linear(const at::Tensor& weight, const at::Tensor& bias,
                                                const ModelOptions& options) {
#if SLIMBERT_HAVE_DNNL
  if (options.int8) return std::make_shared<OnednnInt8Linear>(weight, bias);
#else
  if (options.int8) return std::make_shared<Int8Linear>(weight, bias);
#endif
  return std::make_shared<OnednnLinear>(weight, bias);
}

bool packs_weights(const ModelOptions& options) {
  return options.int8 || options.gemm == Gemm::kOnednn;
}

RuntimeConfig runtime_for(const ModelOptions& options, RuntimeConfig runtime) {
  if (packs_weights(options)) runtime.torch_intra = true;
  return runtime;
}

namespace {

// One encoder layer of `config`'s shape (layer 0's heads), initialised as `slimbert init` does
// (init_weights draws from its own generator: the global one is not advanced).
std::pair<BertConfig, TensorMap> one_random_layer(const BertConfig& config) {
  BertConfig c = config;
  c.num_hidden_layers = 1;
  c.vocab_size = 64;  // the embedding lookup does not depend on it
  c.pruned_heads.clear();
  if (auto it = config.pruned_heads.find(0); it != config.pruned_heads.end())
    c.pruned_heads[0] = it->second;
  c.id2label.clear();
  BertModel bert(c);
  init_weights(*bert, c, 0);
  return {c, state_dict(*bert)};
}

}  // namespace

GemmTiming measure_gemm(const BertConfig& config, const RuntimeConfig& runtime) {
  const std::pair<BertConfig, TensorMap> layer = one_random_layer(config);
  const BertConfig& c = layer.first;
  // One short sequence (what a server mostly sees), one long one, a batch of long ones: which
  // engine wins depends on the rows (on one AVX2 machine oneDNN was 1.4x faster at 12 tokens and
  // level at 128 rows of products alone).
  const int64_t T = std::min<int64_t>(128, c.max_sequence_length());
  const std::vector<std::pair<int64_t, int64_t>> shapes = {
      {1, std::min<int64_t>(16, T)}, {1, T}, {4, T}};
  auto time = [&](Gemm gemm, std::vector<double>* ms) {
    ModelOptions o;
    o.gemm = gemm;
    configure_runtime(runtime_for(o, runtime));
    const auto model = InferenceModel::from_weights(c, layer.second, o);
    for (const auto& [b, t] : shapes) ms->push_back(measure_latency(*model, b, t, {}, 3, 1).p50);
  };
  std::vector<double> blas, onednn;
  time(Gemm::kBlas, &blas);
  time(Gemm::kOnednn, &onednn);
  GemmTiming g;
  double log_speedup = 0;
  for (size_t i = 0; i < shapes.size(); ++i) {
    g.blas_ms += blas[i];
    g.onednn_ms += onednn[i];
    log_speedup += std::log(blas[i] / onednn[i]) / static_cast<double>(shapes.size());
  }
  g.onednn_speedup = std::exp(log_speedup);
  return g;
}

GemmPeak measure_gemm_peak(const RuntimeConfig& runtime, int64_t size, int repeats) {
  at::NoGradGuard no_grad;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(0);  // the global generator is left alone
  const at::Tensor x = at::randn({size, size}, gen), w = at::randn({size, size}, gen);
  const at::Tensor bias = at::zeros({size});
  auto rate = [&](const std::function<at::Tensor()>& product) {
    product();  // warm-up (and a oneDNN primitive for these rows)
    double best = 0;
    for (int r = 0; r < repeats; ++r) {
      const auto t0 = std::chrono::steady_clock::now();
      product();
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      best = std::max(best,
                      2.0 * static_cast<double>(size * size) * static_cast<double>(size) / s / 1e9);
    }
    return best;
  };
  GemmPeak peak;
  ModelOptions o;
  configure_runtime(runtime_for(o, runtime));
  peak.openblas_fp32 = rate([&] { return at::mm(x, w.t()); });
  // Each engine as the model runs it (pack_linear).
  for (bool int8 : {false, true}) {
    if (!at::hasMKLDNN() || (int8 && !select_int8_engine())) continue;
    o.gemm = int8 ? Gemm::kBlas : Gemm::kOnednn;
    o.int8 = int8;
    configure_runtime(runtime_for(o, runtime));
    const auto linear = pack_linear(w, bias, o);
    (int8 ? peak.int8 : peak.onednn_fp32) = rate([&] { return (*linear)(x); });
  }
  configure_runtime(runtime);
  return peak;
}

ModelOptions configure_engine(const BertConfig& config, ModelOptions options,
                              const RuntimeConfig& runtime) {
  if (options.gemm == Gemm::kAuto) {
    options.gemm = Gemm::kBlas;
    if (!options.int8 && parse_device(runtime.device).is_cpu() && at::hasMKLDNN()) {
      options.measured = measure_gemm(config, runtime);
      if (options.measured->onednn_speedup > 1.0) options.gemm = Gemm::kOnednn;
    }
  }
  configure_runtime(runtime_for(options, runtime));
  return options;
}

struct InferenceModel::Layer {
  int64_t heads = 0;
  at::Tensor qkv_w, qkv_b;  // (heads * 3 * head_size, H), rows grouped by head
  at::Tensor attn_out_w, attn_out_b, attn_ln_w, attn_ln_b;
  at::Tensor ffn_in_w, ffn_in_b, ffn_out_w, ffn_out_b, out_ln_w, out_ln_b;
  // Packed maps (int8 or oneDNN fp32) per kept head count (widths asked for at load).
  struct Packed {
    std::shared_ptr<const PackedLinear> qkv, attn_out, ffn_in, ffn_out;
  };
  std::map<int64_t, Packed> packed;
};

InferenceModel::InferenceModel() = default;
InferenceModel::~InferenceModel() = default;

namespace {

// Reads tensors by HF name from a base-model or head-model file and checks their shapes.
class WeightReader {
 public:
  WeightReader(TensorMap weights, std::string source)
      : weights_(std::move(weights)), source_(std::move(source)) {}

  bool has(const std::string& name) const { return find(name) != weights_.end(); }

  // The tensor as fp32 on `device`, removed from the map so that its memory goes with its use.
  at::Tensor take(const std::string& name, std::vector<int64_t> shape, c10::Device device) {
    auto it = find(name);
    if (it == weights_.end()) fail(source_, ": missing tensor ", name);
    at::Tensor t = it->second;
    if (t.sizes() != at::IntArrayRef(shape))
      fail(source_, ": tensor ", it->first, " has shape ", t.sizes(), ", expected ",
           at::IntArrayRef(shape));
    weights_.erase(it);
    return t.to(device, at::kFloat).contiguous();
  }

 private:
  TensorMap::iterator find(const std::string& name) {
    for (const std::string& prefix : {std::string(), std::string(hf::kEncoder) + "."}) {
      auto it = weights_.find(prefix + name);
      if (it != weights_.end()) return it;
    }
    return weights_.end();
  }
  TensorMap::const_iterator find(const std::string& name) const {
    return const_cast<WeightReader*>(this)->find(name);
  }
  TensorMap weights_;
  std::string source_;
};

int64_t heads_for(const BertConfig& config, int64_t layer, double width) {
  return layer_shape(config, layer, width).heads;
}

}  // namespace

namespace {

void check_options(const ModelOptions& options) {
  if (options.gemm == Gemm::kAuto)
    fail("InferenceModel::load: Gemm::kAuto is resolved by configure_engine before loading");
  if (options.int8 && options.gemm == Gemm::kOnednn)
    fail("--gemm onednn is the fp32 path; --int8 runs its own (oneDNN's int8 kernels)");
  if (packs_weights(options) && !compute_device().is_cpu())
    fail(options.int8 ? "--int8" : "--gemm onednn", " runs on the CPU only");
  if (options.int8) {
    if (!select_int8_engine())
      fail("--int8: this libtorch has no oneDNN quantized engine (supported: QNNPACK only?)");
  }
}

}  // namespace

std::shared_ptr<const InferenceModel> InferenceModel::load(const std::string& dir,
                                                           const ModelOptions& options) {
  const BertConfig config = load_config_dir(dir);
  config.validate(dir + "/config.json");
  check_options(options);
  TensorMap tensors = load_weights(dir);
  check_config_matches_weights(config, tensors, weights_path(dir));
  return build(dir, config, std::move(tensors), weights_path(dir), options);
}

std::shared_ptr<const InferenceModel> InferenceModel::from_weights(const BertConfig& config,
                                                                   TensorMap tensors,
                                                                   const ModelOptions& options) {
  config.validate("config");
  check_options(options);
  check_config_matches_weights(config, tensors, "weights");
  return build("", config, std::move(tensors), "weights", options);
}

std::shared_ptr<const InferenceModel> InferenceModel::build(const std::string& dir,
                                                            const BertConfig& config,
                                                            TensorMap tensors,
                                                            const std::string& source,
                                                            const ModelOptions& options) {
  std::shared_ptr<InferenceModel> m(new InferenceModel());
  m->dir_ = dir;
  m->config_ = config;
  m->options_ = options;
  const BertConfig& c = m->config_;
  const c10::Device device = compute_device();
  WeightReader w(std::move(tensors), source);

  const int64_t H = c.hidden_size, d = c.attention_head_size(), F = c.intermediate_size;
  auto weight = [](const std::string& module) { return hf::path({module, "weight"}); };
  auto bias = [](const std::string& module) { return hf::path({module, "bias"}); };
  m->word_ = w.take(weight(hf::kWordEmbeddings), {c.vocab_size, H}, device);
  m->padding_idx_ = position_padding_idx(c);
  m->position_ = w.take(weight(hf::kPositionEmbeddings), {c.max_position_embeddings, H}, device);
  m->token_type_ = w.take(weight(hf::kTokenTypeEmbeddings), {c.type_vocab_size, H}, device);
  m->emb_ln_w_ = w.take(weight(hf::kEmbeddingNorm), {H}, device);
  m->emb_ln_b_ = w.take(bias(hf::kEmbeddingNorm), {H}, device);

  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    auto in_layer = [&](const char* module) { return hf::path({hf::layer(l), module}); };
    Layer L;
    L.heads = c.heads_in_layer(l);
    const int64_t inner = L.heads * d;
    const at::Tensor q = w.take(weight(in_layer(hf::kQuery)), {inner, H}, device);
    const at::Tensor k = w.take(weight(in_layer(hf::kKey)), {inner, H}, device);
    const at::Tensor v = w.take(weight(in_layer(hf::kValue)), {inner, H}, device);
    const at::Tensor qb = w.take(bias(in_layer(hf::kQuery)), {inner}, device);
    const at::Tensor kb = w.take(bias(in_layer(hf::kKey)), {inner}, device);
    const at::Tensor vb = w.take(bias(in_layer(hf::kValue)), {inner}, device);
    // (3, heads, d, H) -> (heads, 3, d, H): each head's q, k, v rows side by side.
    L.qkv_w = at::stack({q, k, v}).view({3, L.heads, d, H}).transpose(0, 1).reshape({-1, H});
    L.qkv_b = at::stack({qb, kb, vb}).view({3, L.heads, d}).transpose(0, 1).reshape({-1});
    L.attn_out_w = w.take(weight(in_layer(hf::kAttentionOutput)), {H, inner}, device);
    L.attn_out_b = w.take(bias(in_layer(hf::kAttentionOutput)), {H}, device);
    L.attn_ln_w = w.take(weight(in_layer(hf::kAttentionNorm)), {H}, device);
    L.attn_ln_b = w.take(bias(in_layer(hf::kAttentionNorm)), {H}, device);
    L.ffn_in_w = w.take(weight(in_layer(hf::kIntermediate)), {F, H}, device);
    L.ffn_in_b = w.take(bias(in_layer(hf::kIntermediate)), {F}, device);
    L.ffn_out_w = w.take(weight(in_layer(hf::kOutput)), {H, F}, device);
    L.ffn_out_b = w.take(bias(in_layer(hf::kOutput)), {H}, device);
    L.out_ln_w = w.take(weight(in_layer(hf::kOutputNorm)), {H}, device);
    L.out_ln_b = w.take(bias(in_layer(hf::kOutputNorm)), {H}, device);
    if (m->packs()) {
      for (double width : options.widths) {
        const LayerShape s = layer_shape(c, l, width);
        if (s.heads == 0 || L.packed.count(s.heads)) continue;
        const int64_t rows = s.heads * 3 * d, in = s.heads * d;
        auto pack = [&](const at::Tensor& weight, const at::Tensor& b) {
          return pack_linear(weight, b, options);
        };
        Layer::Packed q8;
        q8.qkv = pack(L.qkv_w.narrow(0, 0, rows), L.qkv_b.narrow(0, 0, rows));
        q8.attn_out = pack(L.attn_out_w.narrow(1, 0, in), L.attn_out_b);
        q8.ffn_in = pack(L.ffn_in_w.narrow(0, 0, s.ffn), L.ffn_in_b.narrow(0, 0, s.ffn));
        q8.ffn_out = pack(L.ffn_out_w.narrow(1, 0, s.ffn), L.ffn_out_b);
        L.packed.emplace(s.heads, std::move(q8));
      }
      // The fp32 copies of the encoder's matrices are not used any more.
      L.qkv_w = L.attn_out_w = L.ffn_in_w = L.ffn_out_w = at::Tensor();
    }
    m->layers_.push_back(std::move(L));
  }
  if (w.has(weight(hf::kPooler))) {
    m->pooler_w_ = w.take(weight(hf::kPooler), {H, H}, device);
    m->pooler_b_ = w.take(bias(hf::kPooler), {H}, device);
  }
  if (w.has(weight(hf::kClassifier))) {
    m->classifier_w_ = w.take(weight(hf::kClassifier), {c.num_labels(), H}, device);
    m->classifier_b_ = w.take(bias(hf::kClassifier), {c.num_labels()}, device);
    if (!m->has_pooler())
      fail(source,
           ": a classifier without pooler.dense (BERT classifies the pooled "
           "[CLS] vector)");
  }
  if (w.has(weight(hf::kMlmTransform))) {
    m->mlm_w_ = w.take(weight(hf::kMlmTransform), {H, H}, device);
    m->mlm_b_ = w.take(bias(hf::kMlmTransform), {H}, device);
    m->mlm_ln_w_ = w.take(weight(hf::kMlmNorm), {H}, device);
    m->mlm_ln_b_ = w.take(bias(hf::kMlmNorm), {H}, device);
    m->mlm_bias_ = w.take(hf::kMlmBias, {c.vocab_size}, device);
  }
  // The runtime keeps freed blocks in the heap (configure_runtime: forward passes reuse them
  // instead of faulting pages in); what loading freed (the fp32 copies fused or packed away)
  // would stay resident for good otherwise.
  malloc_trim(0);
  return m;
}

const char* InferenceModel::engine_name() const {
  return options_.int8 ? "int8" : gemm_name(options_.gemm);
}

c10::Device InferenceModel::device() const {
  return word_.device();
}

int64_t InferenceModel::weight_bytes() const {
  int64_t bytes = 0;
  auto add = [&](const at::Tensor& t) {
    if (t.defined()) bytes += t.numel() * static_cast<int64_t>(t.element_size());
  };
  for (const at::Tensor* t :
       {&word_, &position_, &token_type_, &emb_ln_w_, &emb_ln_b_, &pooler_w_, &pooler_b_,
        &classifier_w_, &classifier_b_, &mlm_w_, &mlm_b_, &mlm_ln_w_, &mlm_ln_b_, &mlm_bias_})
    add(*t);
  for (const Layer& L : layers_) {
    for (const at::Tensor* t :
         {&L.qkv_w, &L.qkv_b, &L.attn_out_w, &L.attn_out_b, &L.attn_ln_w, &L.attn_ln_b, &L.ffn_in_w,
          &L.ffn_in_b, &L.ffn_out_w, &L.ffn_out_b, &L.out_ln_w, &L.out_ln_b})
      add(*t);
    for (const auto& [heads, q] : L.packed)
      bytes += q.qkv->bytes() + q.attn_out->bytes() + q.ffn_in->bytes() + q.ffn_out->bytes();
  }
  return bytes;
}

bool InferenceModel::supports(const SubNet& subnet) const {
  if (!(subnet.width > 0 && subnet.width <= 1 && subnet.depth > 0 && subnet.depth <= 1))
    return false;
  if (!packs()) return true;
  for (int64_t l = 0; l < config_.num_hidden_layers; ++l) {
    const int64_t h = heads_for(config_, l, subnet.width);
    if (h > 0 && !layers_[static_cast<size_t>(l)].packed.count(h)) return false;
  }
  return true;
}

at::Tensor InferenceModel::layer_forward(const Layer& L, const at::Tensor& x,
                                         const at::Tensor& mask_bias,
                                         const LayerShape& shape) const {
  const int64_t B = x.size(0), T = x.size(1), h = shape.heads, d = shape.head_size;
  const Layer::Packed* q8 = nullptr;
  if (packs()) {
    auto it = L.packed.find(h);
    if (it == L.packed.end())
      fail(options_.int8 ? "int8" : "oneDNN", " weights were not packed for ", h,
           " heads (load the model with that width)");
    q8 = &it->second;
  }
  at::Tensor attn;
  if (h == 0) {
    // No heads left: the attention block adds only its output bias.
    attn = at::layer_norm(x + L.attn_out_b, {x.size(2)}, L.attn_ln_w, L.attn_ln_b,
                          config_.layer_norm_eps);
  } else {
    // (B, T, h, 3, d): the first h heads' q, k, v, one contiguous slice of the fused matrix.
    const at::Tensor qkv =
        (q8 ? (*q8->qkv)(x)
            : at::linear(x, L.qkv_w.narrow(0, 0, h * 3 * d), L.qkv_b.narrow(0, 0, h * 3 * d)))
            .view({B, T, h, 3, d});
    const at::Tensor q = qkv.select(3, 0).transpose(1, 2);  // (B, h, T, d)
    const at::Tensor k = qkv.select(3, 1).transpose(1, 2);
    const at::Tensor v = qkv.select(3, 2).transpose(1, 2);
    const double scale = 1.0 / std::sqrt(static_cast<double>(d));
    at::Tensor scores = at::matmul(q, k.transpose(2, 3)).mul_(scale);  // (B, h, T, T)
    if (mask_bias.defined()) scores.add_(mask_bias);                   // (B, 1, 1, T)
    const at::Tensor context =
        at::matmul(at::softmax(scores, -1), v).transpose(1, 2).reshape({B, T, h * d});
    at::Tensor projected = q8 ? (*q8->attn_out)(context)
                              : at::linear(context, L.attn_out_w.narrow(1, 0, h * d), L.attn_out_b);
    attn = at::layer_norm(projected.add_(x), {x.size(2)}, L.attn_ln_w, L.attn_ln_b,
                          config_.layer_norm_eps);
  }
  const int64_t f = shape.ffn;
  const at::Tensor inner =
      activation(q8 ? (*q8->ffn_in)(attn)
                    : at::linear(attn, L.ffn_in_w.narrow(0, 0, f), L.ffn_in_b.narrow(0, 0, f)),
                 config_.hidden_act);
  at::Tensor out =
      q8 ? (*q8->ffn_out)(inner) : at::linear(inner, L.ffn_out_w.narrow(1, 0, f), L.ffn_out_b);
  return at::layer_norm(out.add_(attn), {x.size(2)}, L.out_ln_w, L.out_ln_b,
                        config_.layer_norm_eps);
}

Output InferenceModel::forward(const Batch& input, const SubNet& subnet) const {
  c10::InferenceMode guard;
  const Batch batch = input.to(word_.device());
  const at::Tensor& ids = batch.input_ids;
  // attention_bias checks the shapes: (B, 1, T) float min on padding, undefined when none.
  at::Tensor mask_bias = attention_bias(batch);
  if (mask_bias.defined()) mask_bias = mask_bias.unsqueeze(1);  // (B, 1, 1, T)
  if (ids.numel() && (ids.max().item<int64_t>() >= word_.size(0) || ids.min().item<int64_t>() < 0))
    fail("token id ", ids.max().item<int64_t>(), " is outside the model's vocabulary of ",
         word_.size(0), " (is vocab.txt longer than config.json's vocab_size?)");
  const at::Tensor& types = batch.token_type_ids;
  if (types.defined() && types.numel() &&
      (types.max().item<int64_t>() >= token_type_.size(0) || types.min().item<int64_t>() < 0))
    fail("token type ", types.max().item<int64_t>(), " is outside the model's ",
         token_type_.size(0), " token types (type_vocab_size; a text pair needs 2)");

  at::Tensor x = at::embedding(word_, ids) + position_rows(position_, ids, padding_idx_);
  x = types.defined() ? x + at::embedding(token_type_, types) : x + token_type_[0];
  x = at::layer_norm(x, {x.size(2)}, emb_ln_w_, emb_ln_b_, config_.layer_norm_eps);
  for (int64_t l : kept_layers(static_cast<int64_t>(layers_.size()), subnet.depth))
    x = layer_forward(layers_[static_cast<size_t>(l)], x, mask_bias,
                      layer_shape(config_, l, subnet.width));
  Output out;
  out.last = x;
  if (has_pooler()) out.pooled = at::tanh(at::linear(x.select(1, 0), pooler_w_, pooler_b_));
  if (has_classifier()) out.logits = at::linear(out.pooled, classifier_w_, classifier_b_);
  return out;
}

at::Tensor InferenceModel::mlm_logits(const at::Tensor& last) const {
  if (!has_mlm())
    fail(dir_, ": no masked-LM head in this checkpoint (cls.predictions.transform.dense)");
  c10::InferenceMode guard;
  at::Tensor h = activation(at::linear(last, mlm_w_, mlm_b_), config_.hidden_act);
  h = at::layer_norm(h, {h.size(-1)}, mlm_ln_w_, mlm_ln_b_, config_.layer_norm_eps);
  return at::linear(h, word_, mlm_bias_);
}

std::shared_ptr<const InferenceModel> load_configured(const std::string& dir,
                                                      const ModelOptions& request,
                                                      const RuntimeConfig& runtime) {
  auto model = InferenceModel::load(dir, configure_engine(load_config_dir(dir), request, runtime));
  if (std::any_of(request.widths.begin(), request.widths.end(), [](double w) { return w < 1.0; }) &&
      !width_adaptive(model->config()))
    std::cerr << "slimbert: warning: " << dir
              << " was never rewired (its config.json's slimbert_history has no \"rewired\"): "
                 "its first heads are not its most important, so a width below 1 loses far more "
                 "accuracy than on a DynaBERT model (slimbert compress, or dynabert rewire and "
                 "its stages, make one)\n";
  return model;
}

}  // namespace slimbert::infer
