// slimbert serve against references nobody here wrote: every answer (success and error) is
// validated against the schemas of TEI's own OpenAPI document, and the official OpenAI client and
// HuggingFace's inference client run against it at their default settings.
import {InferenceClient} from '@huggingface/inference';
import Ajv from 'ajv';
import fs from 'node:fs';
import OpenAI from 'openai';

import {check, close, done, fixtures, serve, tinyModel} from './common.mjs';

const openapi = JSON.parse(fs.readFileSync(`${fixtures}/tei/openapi.json`, 'utf8'));
const ajv = new Ajv({strict: false, validateFormats: false, allErrors: true});
ajv.addSchema({components: openapi.components}, 'tei');
const validators = new Map();
let validated = 0;
const covered = new Set();

// The schema TEI documents for (route, status), or undefined when it documents none.
function schemaFor(path, method, status) {
  const op = openapi.paths[path]?.[method];
  const response = op?.responses?.[String(status)];
  if (!response) return undefined;
  const content = response.content?.['application/json'] ?? response.content?.['text/plain'];
  if (!content) return {none: true};
  const ref = content.schema.$ref;
  if (!ref) return {type: content.schema.type};
  if (!validators.has(ref)) validators.set(ref, ajv.compile({$ref: `tei${ref}`}));
  return {validate: validators.get(ref)};
}

// Sends a request and checks its status and its body against TEI's schema for that status.
async function call(base, method, path, body, status, headers = {}) {
  const response = await fetch(base + path, {
    method,
    headers: {'content-type': 'application/json', ...headers},
    body: body === undefined     ? undefined :
        typeof body === 'string' ? body :
                                   JSON.stringify(body),
  });
  const text = await response.text();
  const what = `${method.toUpperCase()} ${path} ${
      typeof body === 'string' ? body : JSON.stringify(body)?.slice(0, 80)}`;
  check(
      response.status === status,
      `${what}: status ${response.status}, expected ${status}: ${text.slice(0, 300)}`);
  const schema = schemaFor(path, method, response.status);
  check(schema !== undefined, `${what}: TEI documents no ${response.status} for ${path}`);
  let json;
  if (schema?.validate) {
    try {
      json = JSON.parse(text);
    } catch {
      check(false, `${what}: body is not JSON: ${text.slice(0, 200)}`);
      return {response, json};
    }
    const ok = schema.validate(json);
    check(
        ok,
        `${what}: body does not match TEI's schema: ${ajv.errorsText(schema.validate.errors)}: ${
            text.slice(0, 300)}`);
    validated += 1;
    covered.add(`${path} ${response.status}`);
  } else if (schema?.none || schema?.type) {
    validated += 1;
    covered.add(`${path} ${response.status}`);
  }
  return {response, json, text};
}

const norm = (v) => Math.sqrt(v.reduce((s, x) => s + x * x, 0));

// ---- An embedding model with an MLM head, behind an API key ----------------------------------
const key = 'test-key-123';
const embDir = tinyModel('emb');
fs.writeFileSync(
    `${embDir}/config_sentence_transformers.json`, JSON.stringify({prompts: {query: 'query: '}}));
const emb = await serve(
    embDir, '--api-key', key, '--max-client-batch-size', '4', '--max-length', '16',
    '--cors-allow-origin', 'https://app.example');
const auth = {
  authorization: `Bearer ${key}`
};
{
  const base = emb.url;
  const post = (path, body, status) => call(base, 'post', path, body, status, auth);
  // Access control: /health is open, everything else needs the key.
  check((await fetch(base + '/health')).status === 200, '/health without a key');
  check((await fetch(base + '/info')).status === 401, '/info without a key is 401');
  check(
      (await fetch(
           base + '/embed', {method: 'POST', headers: {authorization: 'Bearer wrong'}, body: '{}'}))
              .status === 401,
      'a wrong key is 401');
  const preflight = await fetch(base + '/embed', {
    method: 'OPTIONS',
    headers: {origin: 'https://app.example', 'access-control-request-method': 'POST'}
  });
  check(
      preflight.status === 204 &&
          preflight.headers.get('access-control-allow-origin') === 'https://app.example',
      `CORS preflight: ${preflight.status} ${
          preflight.headers.get('access-control-allow-origin')}`);

  await call(base, 'get', '/health', undefined, 200);
  const info = (await call(base, 'get', '/info', undefined, 200, auth)).json;
  check(
      info?.model_type?.embedding?.pooling === 'cls',
      `info.model_type: ${JSON.stringify(info?.model_type)}`);
  const metrics = await call(base, 'get', '/metrics', undefined, 200, auth);
  check(metrics.text?.includes('slimbert_requests_total'), '/metrics');

  const one = (await post('/embed', {inputs: 'hello world'}, 200)).json;
  check(
      one?.length === 1 && one[0].length === info.slimbert.hidden_size,
      '/embed of one text is [[...]]');
  check(Math.abs(norm(one[0]) - 1) < 1e-5, '/embed normalises by default');
  const two = (await post('/embed', {inputs: ['hello world', 'x'], normalize: false}, 200)).json;
  close(
      two[0].map((x) => x / norm(two[0])), one[0], 1e-5, 'normalize: false is the same direction');
  const dims = (await post('/embed', {inputs: 'hello world', dimensions: 8}, 200)).json;
  check(
      dims[0].length === 8 && Math.abs(norm(dims[0]) - 1) < 1e-5,
      'dimensions: 8 keeps 8, renormalised');
  close(
      dims[0], two[0].slice(0, 8).map((x) => x / norm(two[0].slice(0, 8))), 1e-5,
      'dimensions keeps the first values');

  // Token ids are the same input as the text they encode.
  const tokens = (await post('/tokenize', {inputs: 'hello world'}, 200)).json;
  const ids = tokens[0].map((t) => t.id);
  check(
      tokens[0][0].special && tokens[0][0].start === null && !tokens[0][1].special,
      '/tokenize marks special tokens');
  check(
      tokens[0][1].text === 'hello' && tokens[0][1].start === 0 && tokens[0][1].stop === 5,
      `/tokenize offsets: ${JSON.stringify(tokens[0][1])}`);
  const byIds = (await post('/embed', {inputs: ids}, 200)).json;
  close(byIds[0], one[0], 1e-5, '/embed of token ids equals /embed of the text');
  await post('/embed', {inputs: ['hello world', ids]}, 200);
  const decoded = (await post('/decode', {ids}, 200)).json;
  check(decoded[0] === 'hello world', `/decode: ${JSON.stringify(decoded)}`);
  await post('/decode', {ids: [ids, ids], skip_special_tokens: false}, 200);
  await post(
      '/tokenize', {inputs: ['Hello, World!', 'caf\u00e9 \u4e2d\u6587'], add_special_tokens: false},
      200);

  const long =
      'one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen';
  await post('/embed', {inputs: long, truncate: true, truncation_direction: 'Left'}, 200);
  await post('/embed', {inputs: long, truncate: false}, 413);
  await post('/embed', {inputs: []}, 400);
  await post('/embed', {inputs: ['a', 'b', 'c', 'd', 'e']}, 413);
  await post('/embed', {inputs: 3}, 422);
  await post('/embed', '{not json', 422);
  await post('/embed', {inputs: 'x', prompt_name: 'passage'}, 422);
  const prompted = (await post('/embed', {inputs: 'hello', prompt_name: 'query'}, 200)).json;
  const prefixed = (await post('/embed', {inputs: 'query: hello'}, 200)).json;
  close(prompted[0], prefixed[0], 1e-6, 'prompt_name prepends the model\'s prompt');
  await post('/embed', {inputs: 'x', width: 2}, 422);
  await post('/embed', {inputs: 'x', dimensions: 100000}, 422);
  const stepped = await post('/embed', {inputs: 'x', width: 0.5}, 200);
  check(
      stepped.response.headers.get('x-subnet') === 'w0.5_d1', 'width 0.5 runs w0.5_d1 (x-subnet)');
  const plain = await post('/embed', {inputs: 'x'}, 200);
  check(
      plain.response.headers.get('x-subnet') === 'w1_d1',
      'no budget: the full model, never stepped down');
  const budget = await post('/embed', {inputs: 'x', latency_budget_ms: 100000}, 200);
  check(
      budget.response.headers.get('x-budget-met') === 'true',
      'a budget answer says whether it was met');

  const all = (await post('/embed_all', {inputs: ['hello world', 'x']}, 200)).json;
  check(
      all?.[0]?.length === ids.length && all[0][0].length === info.slimbert.hidden_size,
      '/embed_all: a vector per token');
  const sparse = (await post('/embed_sparse', {inputs: 'hello world'}, 200)).json;
  check(
      sparse?.[0]?.length > 0 && sparse[0].every((v) => v.value > 0),
      '/embed_sparse: positive weights');
  await post('/embed_sparse', {inputs: []}, 400);
  await post('/embed_all', {inputs: []}, 400);

  const sim =
      (await post(
           '/similarity',
           {inputs: {source_sentence: 'hello world', sentences: ['hello world', 'x']}}, 200))
          .json;
  check(Math.abs(sim[0] - 1) < 1e-5 && sim.length === 2, `/similarity: ${JSON.stringify(sim)}`);
  await post('/similarity', {inputs: {source_sentence: 'a', sentences: []}}, 400);
  await post('/predict', {inputs: 'x'}, 424);
  await post('/rerank', {query: 'a', texts: ['b']}, 424);
  await post('/tokenize', {inputs: []}, 400);
  await post('/decode', {ids: []}, 400);
  await post('/decode', {ids: [999999]}, 422);

  const oa = (await post('/v1/embeddings', {input: ['hello world'], model: 'm'}, 200)).json;
  close(oa.data[0].embedding, one[0], 1e-6, '/v1/embeddings floats equal /embed');
  const b64 =
      (await post('/v1/embeddings', {input: 'hello world', encoding_format: 'base64'}, 200)).json;
  const raw = Buffer.from(b64.data[0].embedding, 'base64');
  const floats =
      Array.from(new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.length)));
  close(floats, one[0], 1e-6, '/v1/embeddings base64 decodes to /embed\'s floats');
  const named = await post('/v1/embeddings', {input: 'x', model: 'w0.5_d1'}, 200);
  check(named.response.headers.get('x-subnet') === 'w0.5_d1', 'model names a sub-network');
  await post('/v1/embeddings', {input: []}, 400);
  await post('/v1/embeddings', {input: ['a', 'b', 'c', 'd', 'e']}, 413);
  await post('/v1/embeddings', {input: 'x', encoding_format: 'hex'}, 422);
  const models = await (await fetch(base + '/v1/models', {headers: auth})).json();
  check(
      models.data.map((m) => m.id).includes('w0.5_d1'),
      `/v1/models lists the sub-networks: ${JSON.stringify(models)}`);

  // The official OpenAI client at its defaults (it asks for base64 and decodes it).
  const openai = new OpenAI({baseURL: `${base}/v1`, apiKey: key});
  const created = await openai.embeddings.create({model: 'slimbert', input: ['hello world', 'x']});
  close(created.data[0].embedding, one[0], 1e-6, 'openai client embeddings.create');
  check(created.usage.prompt_tokens > 0, 'openai client: usage');
  let refused = false;
  try {
    await new OpenAI({baseURL: `${base}/v1`, apiKey: 'wrong', maxRetries: 0})
        .embeddings.create({model: 'm', input: 'x'});
  } catch (e) {
    refused = e.status === 401;
  }
  check(refused, 'openai client with a wrong key: 401');

  // HuggingFace's inference client against an endpoint URL.
  const hf = new InferenceClient(key);
  const fe = await hf.featureExtraction({endpointUrl: base, inputs: 'hello world'});
  close(
      Array.isArray(fe[0]) ? fe[0] : fe, one[0], 1e-6, '@huggingface/inference featureExtraction');
  const ss = await hf.sentenceSimilarity({
    endpointUrl: `${base}/similarity`,
    inputs: {source_sentence: 'hello world', sentences: ['hello world']}
  });
  check(
      Math.abs(ss[0] - 1) < 1e-5,
      `@huggingface/inference sentenceSimilarity: ${JSON.stringify(ss)}`);
  emb.stop();
}

// ---- A classifier -----------------------------------------------------------------------------
const cls = await serve(tinyModel('cls', 3), '--max-queue', '1', '--max-wait-ms', '500');
{
  const base = cls.url;
  const post = (path, body, status) => call(base, 'post', path, body, status);
  const info = (await call(base, 'get', '/info', undefined, 200)).json;
  check(
      Object.keys(info?.model_type?.classifier?.id2label ?? {}).length === 3,
      'info: a 3-label classifier');
  const single = (await post('/predict', {inputs: 'the cat sat'}, 200)).json;
  check(
      single.length === 3 && single[0].score >= single[1].score,
      '/predict of one text: every label, best first');
  const pair = (await post('/predict', {inputs: ['a question', 'an answer']}, 200)).json;
  check(pair.length === 3 && !Array.isArray(pair[0]), 'a list of two strings is one pair');
  const batch =
      (await post('/predict', {inputs: [['a'], ['b', 'c'], 'd'], raw_scores: true}, 200)).json;
  check(batch.length === 3 && Array.isArray(batch[0]), 'a batch gives a list per input');
  await post('/predict', {inputs: []}, 400);
  await post('/predict', {inputs: [['a', 'b', 'c']]}, 422);
  // A full queue: one request waits for company (500 ms) holding the only place.
  const first = post('/predict', {inputs: 'first'}, 200);
  await new Promise((r) => setTimeout(r, 150));
  await post('/predict', {inputs: 'second'}, 429);
  await first;
  cls.stop();
}

// ---- A cross-encoder --------------------------------------------------------------------------
const rr = await serve(tinyModel('rr', 1));
{
  const base = rr.url;
  const post = (path, body, status) => call(base, 'post', path, body, status);
  const info = (await call(base, 'get', '/info', undefined, 200)).json;
  check(
      info?.model_type?.reranker !== undefined,
      `info: a reranker: ${JSON.stringify(info?.model_type)}`);
  const texts = ['deep learning is', 'the cat', 'x y z'];
  const ranked =
      (await post('/rerank', {query: 'what is deep learning?', texts, return_text: true}, 200))
          .json;
  check(
      ranked.length === 3 && ranked.every((r, i) => i === 0 || ranked[i - 1].score >= r.score),
      '/rerank is sorted by score');
  check(
      ranked.every((r) => r.text === texts[r.index] && r.score > 0 && r.score < 1),
      '/rerank: text and sigmoid scores');
  const raw =
      (await post('/rerank', {query: 'what is deep learning?', texts, raw_scores: true}, 200)).json;
  for (const r of raw) {
    const p = ranked.find((x) => x.index === r.index);
    close([1 / (1 + Math.exp(-r.score))], [p.score], 1e-5, 'raw rerank scores are the logits');
  }
  check(raw.every((r) => r.text === undefined), 'no text unless return_text');
  await post('/rerank', {query: 'a', texts: []}, 400);
  await post('/rerank', {query: 3, texts: ['a']}, 422);
  rr.stop();
}

console.log(`tei: ${validated} answers validated against TEI's schemas; covered ${
        [...covered].sort().join(', ')}`);
done('tei');
