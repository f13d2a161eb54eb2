// ONNX Runtime (CPU, npm onnxruntime-node) anchor: forward latency percentiles of an exported BERT.
//   node ort_bench.js MODEL.onnx --batch B --seq S --threads T [--iters N] [--warmup W] [--vocab V]
//   node ort_bench.js MODEL.onnx --compare REF.onnx [--batch B --seq S]: agreement of the two
//     models' first outputs on the same input (cosine per row, worst relative error); exits 1
//     below a cosine of 0.99 (an int8 rewrite checked against the fp32 graph before timing)
const ort = require("onnxruntime-node");

function arg(name, dflt) {
  const i = process.argv.indexOf("--" + name);
  return i >= 0 ? Number(process.argv[i + 1]) : dflt;
}

function percentile(xs, p) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.max(0, Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1))];
}

async function main() {
  const model = process.argv[2];
  const batch = arg("batch", 1), seq = arg("seq", 128), threads = arg("threads", 1);
  const iters = arg("iters", 20), warmup = arg("warmup", 3), vocab = arg("vocab", 30522);
  const session = await ort.InferenceSession.create(model, {
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    graphOptimizationLevel: "all",
    executionMode: "sequential",
  });
  const n = batch * seq;
  const ids = new BigInt64Array(n);
  for (let i = 0; i < n; i++) ids[i] = BigInt(1000 + ((i * 7919) % (vocab - 1000)));
  const feeds = {
    input_ids: new ort.Tensor("int64", ids, [batch, seq]),
    token_type_ids: new ort.Tensor("int64", new BigInt64Array(n), [batch, seq]),
    attention_mask: new ort.Tensor("int64", new BigInt64Array(n).fill(1n), [batch, seq]),
  };
  const ref = process.argv.indexOf("--compare");
  if (ref >= 0) {
    const other = await ort.InferenceSession.create(process.argv[ref + 1], { intraOpNumThreads: threads });
    const a = Object.values(await session.run(feeds))[0].data;
    const b = Object.values(await other.run(feeds))[0].data;
    const width = a.length / n;  // values per token
    let worst = 1, maxAbs = 0, maxRef = 0;
    for (let r = 0; r < n; r++) {
      let dot = 0, na = 0, nb = 0;
      for (let k = r * width; k < (r + 1) * width; k++) {
        dot += a[k] * b[k]; na += a[k] * a[k]; nb += b[k] * b[k];
        maxAbs = Math.max(maxAbs, Math.abs(a[k] - b[k]));
        maxRef = Math.max(maxRef, Math.abs(b[k]));
      }
      worst = Math.min(worst, dot / Math.sqrt(na * nb));
    }
    console.log(JSON.stringify({ model, reference: process.argv[ref + 1], min_cosine: worst,
      max_abs_diff: maxAbs, relative_to_max: maxAbs / maxRef }));
    process.exit(worst >= 0.99 ? 0 : 1);
  }
  const times = [];
  for (let i = 0; i < warmup + iters; i++) {
    const t0 = process.hrtime.bigint();
    await session.run(feeds);
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    if (i >= warmup) times.push(ms);
  }
  console.log(JSON.stringify({ engine: "onnxruntime", version: require("onnxruntime-node/package.json").version,
    threads, batch, seq, p50_ms: percentile(times, 50), p90_ms: percentile(times, 90), p99_ms: percentile(times, 99) }));
}

main().catch((e) => { console.error(e); process.exit(1); });
