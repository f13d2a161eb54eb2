#include "slimbert/infer/onnx.h"

#include <ATen/ATen.h>
#include <onnx/onnx_pb.h>

#include <cmath>
#include <limits>
#include <map>

#include "slimbert/core/error.h"
#include "slimbert/core/fs.h"
#include "slimbert/model/family.h"
#include "slimbert/model/names.h"

namespace slimbert {
namespace {

// Builds one graph: names are made unique by a counter, weights become initializers.
class GraphBuilder {
 public:
  GraphBuilder(onnx::GraphProto* graph, const OnnxOptions& options)
      : graph_(graph), options_(options) {}

  std::string fresh(const std::string& stem) { return cat(stem, "_", counter_++); }

  // One node with one output; returns the output's name.
  std::string op(const std::string& type, const std::vector<std::string>& inputs,
                 const std::function<void(onnx::NodeProto*)>& attributes = {},
                 const std::string& domain = "") {
    onnx::NodeProto* node = graph_->add_node();
    node->set_op_type(type);
    node->set_name(fresh(type));
    if (!domain.empty()) node->set_domain(domain);
    for (const std::string& in : inputs) node->add_input(in);
    const std::string out = fresh(type + "_out");
    node->add_output(out);
    if (attributes) attributes(node);
    return out;
  }

  std::string initializer(const std::string& name, const at::Tensor& t) {
    const at::Tensor c = t.contiguous();
    onnx::TensorProto* init = graph_->add_initializer();
    init->set_name(name);
    for (int64_t d : c.sizes()) init->add_dims(d);
    switch (c.scalar_type()) {
      case at::kFloat:
        init->set_data_type(onnx::TensorProto::FLOAT);
        break;
      case at::kLong:
        init->set_data_type(onnx::TensorProto::INT64);
        break;
      case at::kChar:
        init->set_data_type(onnx::TensorProto::INT8);
        break;
      default:
        fail("onnx: no ONNX type for tensor ", name, " of ", at::toString(c.scalar_type()));
    }
    init->set_raw_data(c.data_ptr(), static_cast<size_t>(c.numel()) * c.element_size());
    return name;
  }

  std::string constant(const at::Tensor& t) { return initializer(fresh("const"), t); }
  std::string ints(const std::vector<int64_t>& v) {
    return constant(at::tensor(v, at::dtype(at::kLong)));
  }
  // One initializer per value, however many layers use it.
  std::string scalar(float v) {
    auto it = scalars_.find(v);
    if (it != scalars_.end()) return it->second;
    return scalars_[v] = constant(at::tensor({v}, at::dtype(at::kFloat)));
  }

  // x (.., in) times weight (out, in) transposed, plus bias (out).
  std::string linear(const std::string& x, const at::Tensor& weight, const at::Tensor& bias,
                     const std::string& name, bool quantize = true) {
    const at::Tensor wt = weight.t().contiguous();  // (in, out)
    if (!options_.int8 || !quantize) {
      const std::string y = op("MatMul", {x, initializer(name + ".weight_t", wt)});
      return op("Add", {y, initializer(name + ".bias", bias)});
    }
    // Symmetric int8 per output column, as ONNX Runtime's quantizer makes them.
    const at::Tensor scale = (wt.abs().amax(0) / 127.0).clamp_min(1e-12);
    const at::Tensor q = at::round(wt / scale).clamp(-127, 127).to(at::kChar);
    return op("DynamicQuantizeMatMul",
              {x, initializer(name + ".weight_q", q), initializer(name + ".weight_scale", scale),
               initializer(name + ".weight_zero_point", at::zeros_like(q[0])),
               initializer(name + ".bias", bias)},
              {}, "com.microsoft");
  }

  std::string layer_norm(const std::string& x, const at::Tensor& gamma, const at::Tensor& beta,
                         double eps, const std::string& name) {
    const std::string g = initializer(name + ".weight", gamma);
    const std::string b = initializer(name + ".bias", beta);
    if (options_.opset >= 17)
      return op("LayerNormalization", {x, g, b}, [&](onnx::NodeProto* n) {
        attr(n, "axis", int64_t{-1});
        attr(n, "epsilon", static_cast<float>(eps));
      });
    auto mean = [&](const std::string& v) {
      return op("ReduceMean", {v}, [](onnx::NodeProto* n) { attr_ints(n, "axes", {-1}); });
    };
    const std::string centered = op("Sub", {x, mean(x)});
    const std::string var = mean(op("Mul", {centered, centered}));
    const std::string std_dev = op("Sqrt", {op("Add", {var, scalar(static_cast<float>(eps))})});
    return op("Add", {op("Mul", {op("Div", {centered, std_dev}), g}), b});
  }

  std::string activation(const std::string& x, const std::string& name) {
    if (name == "relu") return op("Relu", {x});
    if (name == "silu" || name == "swish") return op("Mul", {x, op("Sigmoid", {x})});
    if (name == "gelu_new" || name == "gelu_pytorch_tanh" || name == "gelu_fast") {
      // 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))
      const std::string cube = op("Mul", {op("Mul", {x, x}), x});
      const std::string inner =
          op("Mul", {op("Add", {x, op("Mul", {cube, scalar(0.044715f)})}), scalar(0.7978845608f)});
      return op("Mul",
                {op("Mul", {x, scalar(0.5f)}), op("Add", {op("Tanh", {inner}), scalar(1.0f)})});
    }
    if (name != "gelu") fail("onnx: no export for hidden_act '", name, "'");
    // 0.5 x (1 + erf(x / sqrt(2)))
    const std::string erf = op("Erf", {op("Div", {x, scalar(1.4142135623730951f)})});
    return op("Mul", {op("Mul", {x, scalar(0.5f)}), op("Add", {erf, scalar(1.0f)})});
  }

  static void attr(onnx::NodeProto* n, const char* name, int64_t v) {
    onnx::AttributeProto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::INT);
    a->set_i(v);
  }
  static void attr(onnx::NodeProto* n, const char* name, float v) {
    onnx::AttributeProto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::FLOAT);
    a->set_f(v);
  }
  static void attr_ints(onnx::NodeProto* n, const char* name, const std::vector<int64_t>& v) {
    onnx::AttributeProto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::INTS);
    for (int64_t x : v) a->add_ints(x);
  }

 private:
  onnx::GraphProto* graph_;
  OnnxOptions options_;
  int64_t counter_ = 0;
  std::map<float, std::string> scalars_;
};

void add_value(google::protobuf::RepeatedPtrField<onnx::ValueInfoProto>* values,
               const std::string& name, int32_t type, const std::vector<std::string>& dims) {
  onnx::ValueInfoProto* v = values->Add();
  v->set_name(name);
  onnx::TypeProto_Tensor* t = v->mutable_type()->mutable_tensor_type();
  t->set_elem_type(type);
  for (const std::string& d : dims) {
    onnx::TensorShapeProto_Dimension* dim = t->mutable_shape()->add_dim();
    if (!d.empty() && std::isdigit(static_cast<unsigned char>(d[0])))
      dim->set_dim_value(std::stoll(d));
    else
      dim->set_dim_param(d);
  }
}

const at::Tensor& find(const TensorMap& w, const std::string& name) {
  const at::Tensor* t = find_weight(w, name);
  if (!t) fail("onnx: missing tensor ", name);
  return *t;
}

}  // namespace

void write_onnx(const BertConfig& config, const TensorMap& weights, const OnnxOptions& options,
                const std::string& path) {
  if (options.opset < 13 || options.opset > 21)
    fail("onnx: opset ", options.opset, " is not supported (13 to 21)");
  onnx::ModelProto model;
  model.set_ir_version(8);
  model.set_producer_name("slimbert");
  model.set_doc_string(cat("BERT encoder, ", config.num_hidden_layers, " layers, hidden ",
                           config.hidden_size, options.int8 ? ", int8 weights" : ""));
  onnx::OperatorSetIdProto* onnx_set = model.add_opset_import();
  onnx_set->set_domain("");
  onnx_set->set_version(options.opset);
  if (options.int8) {
    onnx::OperatorSetIdProto* ms = model.add_opset_import();
    ms->set_domain("com.microsoft");
    ms->set_version(1);
  }
  onnx::GraphProto* graph = model.mutable_graph();
  graph->set_name("bert");
  GraphBuilder g(graph, options);
  const std::vector<std::string> bt = {"batch", "sequence"};
  for (const char* in : {"input_ids", "attention_mask", "token_type_ids"})
    add_value(graph->mutable_input(), in, onnx::TensorProto::INT64, bt);

  auto w = [&](const std::string& module, const char* part) {
    return find(weights, hf::path({module, part}));
  };
  const double eps = config.layer_norm_eps;
  const int64_t H = config.hidden_size, d = config.attention_head_size();

  // Embeddings: word + position (0 .. sequence - 1, or RoBERTa's rule) + token type, then
  // LayerNorm.
  const std::string words = g.op("Gather", {g.initializer(hf::path({hf::kWordEmbeddings, "weight"}),
                                                          w(hf::kWordEmbeddings, "weight")),
                                            "input_ids"});
  const std::string length =
      g.op("Gather", {g.op("Shape", {"input_ids"}), g.constant(at::scalar_tensor(1, at::kLong))});
  std::string positions = g.op("Range", {g.constant(at::scalar_tensor(0, at::kLong)), length,
                                         g.constant(at::scalar_tensor(1, at::kLong))});
  if (const auto pad = position_padding_idx(config)) {
    // RoBERTa: padding_idx + the running count of non-padding tokens; padding_idx on padding.
    const std::string pad_id = g.constant(at::scalar_tensor(*pad, at::kLong));
    const std::string real = g.op(
        "Cast", {g.op("Not", {g.op("Equal", {"input_ids", pad_id})})},
        [](onnx::NodeProto* n) { GraphBuilder::attr(n, "to", int64_t{onnx::TensorProto::INT64}); });
    const std::string count = g.op("CumSum", {real, g.constant(at::scalar_tensor(1, at::kLong))});
    positions = g.op("Add", {g.op("Mul", {count, real}), pad_id});
  }
  const std::string pos =
      g.op("Gather", {g.initializer(hf::path({hf::kPositionEmbeddings, "weight"}),
                                    w(hf::kPositionEmbeddings, "weight")),
                      positions});
  const std::string types =
      g.op("Gather", {g.initializer(hf::path({hf::kTokenTypeEmbeddings, "weight"}),
                                    w(hf::kTokenTypeEmbeddings, "weight")),
                      "token_type_ids"});
  std::string x = g.op("Add", {g.op("Add", {words, pos}), types});
  x = g.layer_norm(x, w(hf::kEmbeddingNorm, "weight"), w(hf::kEmbeddingNorm, "bias"), eps,
                   hf::kEmbeddingNorm);

  // (1 - mask) * float min, as (batch, 1, 1, sequence): padding gets no attention.
  const std::string mask = g.op("Cast", {"attention_mask"}, [](onnx::NodeProto* n) {
    GraphBuilder::attr(n, "to", int64_t{onnx::TensorProto::FLOAT});
  });
  const std::string bias_2d = g.op(
      "Mul", {g.op("Sub", {g.scalar(1.0f), mask}), g.scalar(std::numeric_limits<float>::lowest())});
  const std::string mask_bias = g.op("Unsqueeze", {bias_2d, g.ints({1, 2})});

  for (int64_t l = 0; l < config.num_hidden_layers; ++l) {
    auto module = [&](const char* m) { return hf::path({hf::layer(l), m}); };
    const at::Tensor& wq = w(module(hf::kQuery), "weight");
    const int64_t heads = wq.size(0) / d;
    if (heads == 0) fail("onnx: layer ", l, " has no attention heads (not supported)");
    // (batch, sequence, heads * d) -> (batch, heads, sequence, d), or (batch, heads, d, sequence).
    auto split_heads = [&](const std::string& t, std::vector<int64_t> perm) {
      const std::string r = g.op("Reshape", {t, g.ints({0, 0, heads, d})});
      return g.op("Transpose", {r},
                  [perm](onnx::NodeProto* n) { GraphBuilder::attr_ints(n, "perm", perm); });
    };
    const std::string q = split_heads(
        g.linear(x, wq, w(module(hf::kQuery), "bias"), module(hf::kQuery)), {0, 2, 1, 3});
    const std::string k = split_heads(
        g.linear(x, w(module(hf::kKey), "weight"), w(module(hf::kKey), "bias"), module(hf::kKey)),
        {0, 2, 3, 1});
    const std::string v = split_heads(g.linear(x, w(module(hf::kValue), "weight"),
                                               w(module(hf::kValue), "bias"), module(hf::kValue)),
                                      {0, 2, 1, 3});
    const std::string scores =
        g.op("Add", {g.op("Mul", {g.op("MatMul", {q, k}),
                                  g.scalar(static_cast<float>(1.0 / std::sqrt(double(d))))}),
                     mask_bias});
    const std::string probs = g.op("Softmax", {scores}, [](onnx::NodeProto* n) {
      GraphBuilder::attr(n, "axis", int64_t{-1});
    });
    const std::string context =
        g.op("Reshape", {g.op("Transpose", {g.op("MatMul", {probs, v})},
                              [](onnx::NodeProto* n) {
                                GraphBuilder::attr_ints(n, "perm", {0, 2, 1, 3});
                              }),
                         g.ints({0, 0, heads * d})});
    const std::string attn_out =
        g.linear(context, w(module(hf::kAttentionOutput), "weight"),
                 w(module(hf::kAttentionOutput), "bias"), module(hf::kAttentionOutput));
    const std::string attn =
        g.layer_norm(g.op("Add", {attn_out, x}), w(module(hf::kAttentionNorm), "weight"),
                     w(module(hf::kAttentionNorm), "bias"), eps, module(hf::kAttentionNorm));
    const std::string inner =
        g.activation(g.linear(attn, w(module(hf::kIntermediate), "weight"),
                              w(module(hf::kIntermediate), "bias"), module(hf::kIntermediate)),
                     config.hidden_act);
    const std::string out = g.linear(inner, w(module(hf::kOutput), "weight"),
                                     w(module(hf::kOutput), "bias"), module(hf::kOutput));
    x = g.layer_norm(g.op("Add", {out, attn}), w(module(hf::kOutputNorm), "weight"),
                     w(module(hf::kOutputNorm), "bias"), eps, module(hf::kOutputNorm));
  }
  g.op("Identity", {x});
  graph->mutable_node()->rbegin()->set_output(0, "last_hidden_state");
  add_value(graph->mutable_output(), "last_hidden_state", onnx::TensorProto::FLOAT,
            {"batch", "sequence", std::to_string(H)});

  if (weights.count(hf::path({hf::kClassifier, "weight"}))) {
    if (!find_weight(weights, hf::path({hf::kPooler, "weight"})))
      fail("onnx: a classifier without pooler.dense (BERT classifies the pooled [CLS] vector)");
    const std::string cls =
        g.op("Gather", {x, g.constant(at::scalar_tensor(0, at::kLong))},
             [](onnx::NodeProto* n) { GraphBuilder::attr(n, "axis", int64_t{1}); });
    // The pooler and classifier stay fp32: they are one small product per row.
    const std::string pooled =
        g.op("Tanh",
             {g.linear(cls, w(hf::kPooler, "weight"), w(hf::kPooler, "bias"), hf::kPooler, false)});
    const at::Tensor& cw = weights.at(hf::path({hf::kClassifier, "weight"}));
    g.linear(pooled, cw, weights.at(hf::path({hf::kClassifier, "bias"})), hf::kClassifier, false);
    graph->mutable_node()->rbegin()->set_output(0, "logits");
    add_value(graph->mutable_output(), "logits", onnx::TensorProto::FLOAT,
              {"batch", std::to_string(cw.size(0))});
  }
  std::string bytes;
  if (!model.SerializeToString(&bytes)) fail("onnx: cannot serialise the model for ", path);
  write_file_atomic(path, bytes);
}

}  // namespace slimbert
