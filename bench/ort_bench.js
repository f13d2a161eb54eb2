// ONNX Runtime (CPU, npm onnxruntime-node) anchor: forward latency percentiles of an exported BERT.
//   node ort_bench.js MODEL.onnx --batch B --seq S --threads T [--iters N] [--warmup W] [--vocab V]
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
