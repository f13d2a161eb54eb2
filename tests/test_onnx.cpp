// export-onnx read back with ONNX's own schema and passed through ONNX's checker: the graph is
// valid ONNX at each opset, names the inputs and outputs it promises, and int8 uses ONNX Runtime's
// operator for every encoder matrix. (Its numbers against ONNX Runtime: tests/clients/onnx.mjs.)
#include <onnx/checker.h>
#include <onnx/onnx_pb.h>

#include <string>
#include <vector>

#include "slimbert/core/fs.h"
#include "slimbert/dynabert/dynabert.h"
#include "slimbert/io/checkpoint.h"
#include "test_util.h"

namespace slimbert {
namespace {

TEST(Onnx, ExportsAreValidOnnxWithThePromisedInputsAndOutputs) {
  test::TempDir dir;
  const std::string model = dir / "m";
  const auto r = test::run_cli("init " + model + " --preset tiny --labels 2 --max-positions 64 " +
                               "--vocab " + test::fixture("vocab/bert-base-uncased-vocab.txt"));
  ASSERT_EQ(r.code, 0) << r.err;
  const int64_t layers = load_config_dir(model).num_hidden_layers;
  for (const bool int8 : {false, true})
    for (const int64_t opset : {13, 14, 17, 21}) {
      const std::string path = dir / ("m" + std::to_string(opset) + ".onnx");
      export_onnx(model, SubNet{0.5, 0.5}, OnnxOptions{opset, int8}, path);
      onnx::ModelProto m;
      ASSERT_TRUE(m.ParseFromString(read_file(path))) << path;
      EXPECT_NO_THROW(onnx::checker::check_model(m)) << "opset " << opset << " int8 " << int8;
      std::vector<std::string> inputs, outputs;
      for (const auto& v : m.graph().input()) inputs.push_back(v.name());
      for (const auto& v : m.graph().output()) outputs.push_back(v.name());
      EXPECT_EQ(inputs,
                (std::vector<std::string>{"input_ids", "attention_mask", "token_type_ids"}));
      EXPECT_EQ(outputs, (std::vector<std::string>{"last_hidden_state", "logits"}));
      int64_t quantized = 0, layer_norms = 0;
      for (const auto& node : m.graph().node()) {
        quantized += node.op_type() == "DynamicQuantizeMatMul";
        layer_norms += node.op_type() == "LayerNormalization";
      }
      // Depth 0.5 keeps half the layers; each has six weight matrices (q, k, v, out, in, out).
      EXPECT_EQ(quantized, int8 ? 6 * (layers / 2) : 0);
      EXPECT_EQ(layer_norms, opset >= 17 ? 1 + 2 * (layers / 2) : 0);
    }
  // A bad request is an error naming what is wrong, and writes nothing.
  const std::string bad = dir / "bad.onnx";
  EXPECT_THROW(
      {
        try {
          export_onnx(model, SubNet{}, OnnxOptions{9, false}, bad);
        } catch (const InputError& e) {
          EXPECT_NE(std::string(e.what()).find("opset 9"), std::string::npos) << e.what();
          throw;
        }
      },
      InputError);
  EXPECT_FALSE(std::filesystem::exists(bad));
}

}  // namespace
}  // namespace slimbert
