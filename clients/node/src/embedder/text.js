// preprocess.json's `text` section: clean, tokenize with tokenizer.json, build the feeds.
//
// Tokenizer: the `tokenizers` package, Hugging Face's own Rust library (the one Python's
// `tokenizers` wraps) as a Node binding with prebuilt binaries in the npm package. On the
// 367 strings of tests/support/text_corpus.py it gives Python's ids for every string;
// the pure-JavaScript @huggingface/tokenizers 0.2 gave 296/367 (CLIP), 317/367 (BERT)
// and could not load open_clip's tokenizer.json (a regex JavaScript does not read).

import { createRequire } from 'node:module';

import { textCleaner } from './text-cleaning.js';

const require = createRequire(import.meta.url);
const { Tokenizer } = require('tokenizers');

/** What each encoding field is called in the binding. */
const FIELDS = {
  ids: (e) => e.getIds(),
  attention_mask: (e) => e.getAttentionMask(),
  type_ids: (e) => e.getTypeIds(),
};

export class TextPreparer {
  /**
   * @param {string} tokenizerPath
   * @param {object} recipe  preprocess.json `text`
   * @param {object[]} inputs  model.json `towers.text.inputs`
   * @param {object} [options]
   * @param {(text: string) => string} [options.fixText]  see textCleaner
   */
  constructor(tokenizerPath, recipe, inputs, { fixText } = {}) {
    this.recipe = recipe;
    this.inputs = inputs;
    this.clean = textCleaner(recipe.clean ?? [], { fixText });
    this.tokenizer = Tokenizer.fromFile(tokenizerPath);
    for (const input of inputs) {
      const field = recipe.feeds[input.name];
      if (FIELDS[field] === undefined) {
        throw new Error(`preprocess.json text.feeds: input ${input.name} takes unknown field ${field}`);
      }
    }
  }

  /** The prompt text for `promptName` (or the model's default prompt), or ''. */
  prompt(promptName) {
    const name = promptName ?? this.recipe.default_prompt_name;
    if (name === undefined || name === null) return '';
    const prompts = this.recipe.prompts ?? {};
    if (!(name in prompts)) {
      const known = Object.keys(prompts);
      throw new Error(
        `prompt ${JSON.stringify(name)}: this model has ${known.length ? known.join(', ') : 'no prompts'}`,
      );
    }
    return prompts[name];
  }

  /** Token ids (with special tokens, truncated and padded as tokenizer.json says). */
  async encode(texts, { promptName } = {}) {
    const prompt = this.prompt(promptName);
    const cleaned = texts.map((text) => this.clean(prompt + text));
    return this.tokenizer.encodeBatch(cleaned, { addSpecialTokens: this.recipe.add_special_tokens });
  }

  /**
   * The graph's feeds for `texts`, each `{ data, dims, type }` for an ORT tensor.
   * @param {string[]} texts
   * @param {{ promptName?: string }} [options]
   */
  async feeds(texts, { promptName } = {}) {
    const encodings = await this.encode(texts, { promptName });
    const rows = encodings.length;
    const width = encodings.length ? encodings[0].getLength() : 0;
    const promptTokens = await this.promptTokensOutsidePooling(promptName);
    const feeds = {};
    for (const input of this.inputs) {
      const field = this.recipe.feeds[input.name];
      const int64 = input.dtype === 'int64';
      const data = int64 ? new BigInt64Array(rows * width) : new Int32Array(rows * width);
      encodings.forEach((encoding, row) => {
        const values = FIELDS[field](encoding);
        if (values.length !== width) {
          throw new Error('tokenizer.json gave rows of different lengths: it must pad the batch');
        }
        for (let i = 0; i < width; i++) {
          const masked = input.name === 'pooling_mask' && i < promptTokens;
          const value = masked ? 0 : values[i];
          data[row * width + i] = int64 ? BigInt(value) : value;
        }
      });
      feeds[input.name] = { data, dims: [rows, width], type: input.dtype };
    }
    return feeds;
  }

  /**
   * How many leading tokens the pooling mask leaves out: the prompt's, where the model's
   * pooling excludes them (the prompt tokenized alone, without a trailing special token).
   */
  async promptTokensOutsidePooling(promptName) {
    if (this.recipe.prompt_in_pooling !== false) return 0;
    const prompt = this.prompt(promptName);
    if (!prompt) return 0;
    const [encoding] = await this.tokenizer.encodeBatch([this.clean(prompt)], { addSpecialTokens: true });
    const mask = encoding.getAttentionMask();
    const special = encoding.getSpecialTokensMask();
    let n = mask.reduce((sum, m) => sum + m, 0);
    if (n > 0 && special[n - 1] === 1) n -= 1;
    return n;
  }
}
