#!/usr/bin/python3
"""ONNX Runtime's dynamic int8 for a BERT graph: the int8 anchor of bench/inference.sh.

Every MatMul whose second input is a constant 2-D weight becomes ORT's
com.microsoft.DynamicQuantizeMatMul: the weight stored as int8 with one symmetric scale per
output column (its largest magnitude maps to 127), the activations quantized by ORT per call.
That is ORT's own dynamic quantization of the linear maps, per channel, the same scheme as
slimbert's --int8 (weights per output row of W, i.e. per column of W^T).

  ort_int8.py IN.onnx OUT.onnx
"""
import sys

import numpy as np
import onnx
from onnx import helper, numpy_helper


def main():
    src, dst = sys.argv[1], sys.argv[2]
    model = onnx.load(src)
    graph = model.graph
    weights = {init.name: init for init in graph.initializer}
    rewritten = 0
    nodes = []
    for node in graph.node:
        w = weights.get(node.input[1]) if node.op_type == "MatMul" else None
        if w is None or len(w.dims) != 2:
            nodes.append(node)
            continue
        W = numpy_helper.to_array(w).astype(np.float32)  # (in, out)
        scale = np.abs(W).max(axis=0) / 127.0
        scale[scale == 0] = 1.0
        q = np.clip(np.rint(W / scale), -127, 127).astype(np.int8)
        base = node.input[1]
        graph.initializer.extend([
            numpy_helper.from_array(q, base + "_int8"),
            numpy_helper.from_array(scale.astype(np.float32), base + "_scale"),
            numpy_helper.from_array(np.zeros(scale.shape, np.int8), base + "_zero"),
        ])
        nodes.append(helper.make_node(
            "DynamicQuantizeMatMul",
            [node.input[0], base + "_int8", base + "_scale", base + "_zero"],
            list(node.output), name=(node.name or base) + "_int8", domain="com.microsoft"))
        rewritten += 1
    if rewritten == 0:
        sys.exit(f"{src}: no MatMul with a constant 2-D weight to quantize")
    del graph.node[:]
    graph.node.extend(nodes)
    # The fp32 weights no MatMul reads any more.
    used = {i for n in graph.node for i in n.input}
    kept = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.save(model, dst)
    print(f"ort_int8: {rewritten} MatMuls as DynamicQuantizeMatMul -> {dst}", file=sys.stderr)


if __name__ == "__main__":
    main()
