// slimbert export-onnx against ONNX Runtime (npm onnxruntime-node): the exported graph, full or a
// sub-network, runs a padded batch to within 1e-4 of `slimbert forward` on the same inputs; the
// int8 graph (ONNX Runtime's DynamicQuantizeMatMul) stays close to it; bad requests are errors.
import {execFileSync} from 'node:child_process';
import fs from 'node:fs';
import ort from 'onnxruntime-node';

import {check, cli, done, slimbert, tinyModel, work} from './common.mjs';

function writeSafetensors(path, tensors) {
  let offset = 0;
  const header = {};
  const parts = [];
  for (const [name, {shape, data}] of Object.entries(tensors)) {
    const bytes = Buffer.from(new BigInt64Array(data.map(BigInt)).buffer);
    header[name] = {dtype: 'I64', shape, data_offsets: [offset, offset + bytes.length]};
    offset += bytes.length;
    parts.push(bytes);
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8);
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(json.length));
  fs.writeFileSync(path, Buffer.concat([length, Buffer.from(json), ...parts]));
}

function readSafetensors(path) {
  const buf = fs.readFileSync(path);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString());
  const out = {};
  for (const [name, t] of Object.entries(header)) {
    if (name === '__metadata__' || (t.dtype !== 'F32' && t.dtype !== 'I64')) continue;
    const [a, b] = t.data_offsets;
    const bytes = buf.subarray(8 + n + a, 8 + n + b);
    const copy = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length);
    out[name] = {
      shape: t.shape,
      data: t.dtype === 'F32' ? new Float32Array(copy) : new BigInt64Array(copy)
    };
  }
  return out;
}

const maxDiff = (a, b) => a.reduce((m, x, i) => Math.max(m, Math.abs(x - b[i])), 0);

// A padded batch: lengths 12, 7 and 3, the second a text pair.
const T = 12;
const lengths = [12, 7, 3];
const ids = [], mask = [], types = [];
let seed = 7;
const rand = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
lengths.forEach((len, row) => {
  for (let t = 0; t < T; t++) {
    const real = t < len;
    ids.push(real ? (t === 0 ? 101 : t === len - 1 ? 102 : 1000 + Math.floor(rand() * 20000)) : 0);
    mask.push(real ? 1 : 0);
    types.push(real && row === 1 && t >= 4 ? 1 : 0);
  }
});
const inputsPath = `${work}/onnx-inputs.safetensors`;
writeSafetensors(inputsPath, {
  input_ids: {shape: [3, T], data: ids},
  attention_mask: {shape: [3, T], data: mask},
  token_type_ids: {shape: [3, T], data: types},
});
const feeds = {
  input_ids: new ort.Tensor('int64', BigInt64Array.from(ids.map(BigInt)), [3, T]),
  attention_mask: new ort.Tensor('int64', BigInt64Array.from(mask.map(BigInt)), [3, T]),
  token_type_ids: new ort.Tensor('int64', BigInt64Array.from(types.map(BigInt)), [3, T]),
};

const model = tinyModel('cls', 3);
const fp32 = {};
for (const [width, depth] of [[1, 1], [0.5, 0.5]]) {
  const name = `w${width}_d${depth}`;
  const onnx = `${work}/${name}.onnx`;
  cli('export-onnx', model, '--out', onnx, '--width', String(width), '--depth', String(depth));
  const ref = `${work}/${name}-forward.safetensors`;
  cli('forward', model, '--inputs', inputsPath, '--out', ref, '--width', String(width), '--depth',
      String(depth));
  const want = readSafetensors(ref);
  const session = await ort.InferenceSession.create(onnx);
  check(
      JSON.stringify(session.outputNames) === JSON.stringify(['last_hidden_state', 'logits']),
      `outputs: ${session.outputNames}`);
  const got = await session.run(feeds);
  const dh = maxDiff(got.last_hidden_state.data, want.last_hidden_state.data);
  const dl = maxDiff(got.logits.data, want.cls_logits.data);
  console.log(`onnx ${name}: last_hidden_state within ${dh.toExponential(2)}, logits within ${
      dl.toExponential(2)} of slimbert forward`);
  check(dh <= 1e-4 && dl <= 1e-4, `${name}: ONNX Runtime vs slimbert forward: ${dh}, ${dl}`);
  fp32[name] = got;
}

// A model with pruned heads (a static DynaBERT export) goes whole.
{
  const pruned = `${work}/pruned`;
  fs.rmSync(pruned, {recursive: true, force: true});
  cli('dynabert', 'export', '--model', model, '--width', '0.5', '--depth', '0.5', '--out', pruned);
  cli('export-onnx', pruned, '--out', `${work}/pruned.onnx`);
  cli('forward', pruned, '--inputs', inputsPath, '--out', `${work}/pruned-forward.safetensors`);
  const want = readSafetensors(`${work}/pruned-forward.safetensors`);
  const got = await (await ort.InferenceSession.create(`${work}/pruned.onnx`)).run(feeds);
  const d = maxDiff(got.last_hidden_state.data, want.last_hidden_state.data);
  console.log(`onnx pruned-heads model: last_hidden_state within ${d.toExponential(2)}`);
  check(d <= 1e-4, `a pruned model through ONNX Runtime vs slimbert forward: ${d}`);
}

// opset 17: LayerNormalization as one operator gives the same numbers.
cli('export-onnx', model, '--out', `${work}/opset17.onnx`, '--opset', '17');
const o17 = await (await ort.InferenceSession.create(`${work}/opset17.onnx`)).run(feeds);
check(
    maxDiff(o17.last_hidden_state.data, fp32.w1_d1.last_hidden_state.data) <= 1e-4,
    'opset 17 equals opset 14');

// int8: ONNX Runtime's dynamic quantization operator with int8 weights.
cli('export-onnx', model, '--out', `${work}/int8.onnx`, '--int8');
const bytes32 = fs.statSync(`${work}/w1_d1.onnx`).size,
      bytes8 = fs.statSync(`${work}/int8.onnx`).size;
const int8 = await (await ort.InferenceSession.create(`${work}/int8.onnx`)).run(feeds);
const H = int8.last_hidden_state.dims[2];
let worstCos = 1;
for (let r = 0; r < 3 * T; r++) {
  const a = int8.last_hidden_state.data.subarray(r * H, (r + 1) * H),
        b = fp32.w1_d1.last_hidden_state.data.subarray(r * H, (r + 1) * H);
  let dot = 0, na = 0, nb = 0;
  for (let i = 0; i < H; i++) {
    dot += a[i] * b[i];
    na += a[i] * a[i];
    nb += b[i] * b[i];
  }
  worstCos = Math.min(worstCos, dot / Math.sqrt(na * nb));
}
console.log(`onnx int8: ${bytes8} bytes (fp32 ${bytes32}), worst token cosine to fp32 ${
    worstCos.toFixed(5)}`);
check(worstCos > 0.99, `int8 hidden states stay close to fp32 (cosine ${worstCos})`);
check(
    fs.readFileSync(`${work}/int8.onnx`).includes('DynamicQuantizeMatMul'),
    'int8 uses DynamicQuantizeMatMul');

// RoBERTa and XLM-R: positions counted from padding_idx + 1 inside the graph; ONNX Runtime against
// the op-by-op modeling_roberta reference outputs of the fixture models.
for (const family of ['roberta', 'xlm-roberta']) {
  const dir = new URL(`../fixtures/families/${family}`, import.meta.url).pathname;
  const golden = readSafetensors(`${dir}/outputs.safetensors`);
  cli('export-onnx', dir, '--out', `${work}/${family}.onnx`);
  const shape = golden.input_ids.shape;
  const got = await (await ort.InferenceSession.create(`${work}/${family}.onnx`)).run({
    input_ids: new ort.Tensor('int64', golden.input_ids.data, shape),
    attention_mask: new ort.Tensor('int64', golden.attention_mask.data, shape),
    token_type_ids: new ort.Tensor('int64', golden.token_type_ids.data, shape),
  });
  const dh = maxDiff(got.last_hidden_state.data, golden.last_hidden_state.data);
  const dl = maxDiff(got.logits.data, golden.cls_logits.data);
  console.log(`onnx ${family}: last_hidden_state within ${dh.toExponential(2)}, logits within ${
      dl.toExponential(2)} of the modeling_roberta reference`);
  check(dh <= 1e-4 && dl <= 1e-4, `${family}: ONNX Runtime vs modeling_roberta: ${dh}, ${dl}`);
}

// Bad requests are errors that say what is wrong, and leave no file behind.
for (const [args, part] of [
         [['export-onnx', model, '--out', `${work}/bad.onnx`, '--opset', '9'], 'opset'],
         [['export-onnx', `${work}/no-such-model`, '--out', `${work}/bad.onnx`], 'no-such-model'],
]) {
  let err = '';
  try {
    execFileSync(slimbert, args, {stdio: ['ignore', 'pipe', 'pipe']});
  } catch (e) {
    err = String(e.stderr);
  }
  check(err.includes(part) && !fs.existsSync(`${work}/bad.onnx`), `${args.join(' ')}: ${err}`);
}
done('onnx');
