// Regenerates testdata/llama3/: a Llama 3 tokenizer.json cut down to the
// first 6,000 tokens (the 256 bytes and the merges that make tokens below
// that id, in Llama 3's order) plus the 256 special tokens, and the ids an
// independent implementation gives for a set of texts under the same cut
// (llama3_golden.json).
//
// The reference is llama3-tokenizer-js 1.2.0 (MIT; belladore.ai), which
// bakes in Llama 3's vocabulary and merges and is tested against Meta's
// tokenizer. Its merge table and vocabulary are cut the same way before it
// encodes, so that both sides describe the same tokenizer.
//
//   cd $(mktemp -d) && npm pack llama3-tokenizer-js@1.2.0 && tar xzf llama3-tokenizer-js-1.2.0.tgz
//   node gen_llama3_golden.js $PWD/package    (run from this directory)
//
// The text comes from ../../../../shared/data/corpora/tinystories_val.txt.

const fs = require("fs");
const path = require("path");

const pkg = process.argv[2];
const { llama3Tokenizer: tok } = require(path.join(pkg, "bundle", "commonjs-llama3-tokenizer-with-baked-data.cjs"));
const N = Number(process.env.N || 6000);
const SPECIAL0 = 128000;

// The cut: ids below N, and the special tokens.
const keep = (id) => id < N || id >= SPECIAL0;
const vocab = {};
tok.vocabById.forEach((s, id) => { if (keep(id) && id < SPECIAL0) vocab[s] = id; });
// Merges in priority order, kept when both tokens and the merged one
// survive the cut.
const merges = [...tok.merges.entries()].sort((a, b) => a[1] - b[1]).map(([k]) => k)
  .filter((k) => {
    const [a, b] = k.split(" ");
    return [a, b, a + b].every((s) => { const id = tok.vocabByString.get(s); return id !== undefined && id < N; });
  });
const keepMerges = new Set(merges);
for (const k of [...tok.merges.keys()]) if (!keepMerges.has(k)) tok.merges.delete(k);
for (const [s, id] of [...tok.vocabByString.entries()]) if (!keep(id)) tok.vocabByString.delete(s);

const added = [];
for (let id = SPECIAL0; id < tok.vocabById.length; id++) {
  added.push({ id, content: tok.vocabById[id], single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
}
// The layout of Meta's Llama 3 tokenizer.json (abridged to what encoding uses).
const tokenizerJSON = {
  version: "1.0",
  truncation: null,
  padding: null,
  added_tokens: added,
  normalizer: null,
  pre_tokenizer: {
    type: "Sequence",
    pretokenizers: [
      { type: "Split", pattern: { Regex: "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+" }, behavior: "Isolated", invert: false },
      { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: false },
    ],
  },
  post_processor: {
    type: "Sequence",
    processors: [
      { type: "ByteLevel", add_prefix_space: true, trim_offsets: false, use_regex: true },
      {
        type: "TemplateProcessing",
        single: [{ SpecialToken: { id: "<|begin_of_text|>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
        pair: [{ SpecialToken: { id: "<|begin_of_text|>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }, { SpecialToken: { id: "<|begin_of_text|>", type_id: 1 } }, { Sequence: { id: "B", type_id: 1 } }],
        special_tokens: { "<|begin_of_text|>": { id: "<|begin_of_text|>", ids: [128000], tokens: ["<|begin_of_text|>"] } },
      },
    ],
  },
  decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
  model: { type: "BPE", dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, ignore_merges: true, vocab, merges },
};

const corpus = fs.readFileSync(path.join(__dirname, "..", "..", "..", "..", "shared", "data", "corpora", "tinystories_val.txt"), "utf8");
const paragraphs = corpus.split("\n\n").filter((p) => p.trim()).slice(0, 60);
const texts = [
  "", " ", "grabbed", " grabbed", "           grabbed", "\n", " \n", "\ttabs\t\t\t\tout here", "ax\n####\nboo", "镇", "🦙", "🦙Ꙋ", "Ꙋ🦙",
  "This is a test sentence.", "I'm sure they'll say it's THEIR dog'S bone.", "12345 1,234.5678 ٣٤٥", "a  b   c    \n\n  d \t\n",
  "<|begin_of_text|>Hello<|eot_id|> <|start_header_id|>user<|end_header_id|>\n\nHi!<|reserved_special_token_5|>",
  "<|not_special|> <|eot_id", "naïve café — 日本語 🙂 Ünïcödé",
  ...paragraphs,
];
const ids = texts.map((t) => tok.encode(t, { bos: false, eos: false }));

const out = process.env.OUT || path.join(__dirname, "llama3");
fs.mkdirSync(out, { recursive: true });
fs.writeFileSync(path.join(out, "tokenizer.json"), JSON.stringify(tokenizerJSON));
fs.writeFileSync(path.join(out, "llama3_golden.json"), JSON.stringify({ texts, ids }) + "\n");
console.log(`vocab ${Object.keys(vocab).length}, merges ${merges.length}, special ${added.length}, texts ${texts.length}`);
