// The in-process embedder: a folder written by `handspring export`, run with
// onnxruntime-node, its preprocessing done in JavaScript as preprocess.json says.

import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

import ort from 'onnxruntime-node';

import { InputError } from '../errors.js';
import { imagePixels, levelTables } from './image.js';
import { TextPreparer } from './text.js';

const FORMAT = 'handspring-export';

async function readJson(path) {
  try {
    return JSON.parse(await readFile(path, 'utf8'));
  } catch (error) {
    throw new Error(`${path}: cannot read it as JSON (${error.message}): is this a handspring export?`, {
      cause: error,
    });
  }
}

/**
 * Rows of a float32 [rows, dim] output: cut to `dimensions` when given, and then
 * renormalised unless `raw` (Matryoshka, as the server's `dimensions` does).
 */
function rowsOf(tensor, { raw, dimensions }) {
  const [rows, dim] = tensor.dims;
  const width = dimensions ?? dim;
  const out = [];
  for (let r = 0; r < rows; r++) {
    const row = tensor.data.slice(r * dim, r * dim + width);
    if (dimensions !== undefined && !raw) {
      let norm = 0;
      for (const v of row) norm += v * v;
      norm = Math.sqrt(norm);
      if (norm > 0) for (let i = 0; i < width; i++) row[i] /= norm;
    }
    out.push(row);
  }
  return out;
}

export class ExportedModel {
  /**
   * Use `ExportedModel.load(folder)`.
   * @param {string} folder
   * @param {object} manifest  model.json
   * @param {object} preprocess  preprocess.json
   * @param {object} options
   */
  constructor(folder, manifest, preprocess, options) {
    this.folder = folder;
    this.manifest = manifest;
    this.preprocess = preprocess;
    this.options = options;
    this.sessions = new Map();
    this.text = null;
    this.imageTables = preprocess.image ? levelTables(preprocess.image) : null;
  }

  /**
   * @param {string} folder  written by `handspring export`
   * @param {object} [options]
   * @param {number} [options.threads]  ONNX Runtime intra-op threads (default: its own)
   * @param {(text: string) => string} [options.fixText]  a stand-in for Python's
   *   ftfy.fix_text, for models whose cleaning names it (open_clip, SigLIP, ImageBind)
   * @param {object} [options.sessionOptions]  more onnxruntime-node session options
   * @returns {Promise<ExportedModel>}
   */
  static async load(folder, options = {}) {
    const manifest = await readJson(join(folder, 'model.json'));
    if (manifest.format !== FORMAT) {
      throw new Error(`${folder}/model.json: format ${JSON.stringify(manifest.format)} is not ${FORMAT}`);
    }
    if (manifest.format_version !== 1) {
      throw new Error(
        `${folder}/model.json: format_version ${manifest.format_version} is newer than this package reads (1)`,
      );
    }
    const preprocess = await readJson(join(folder, 'preprocess.json'));
    return new ExportedModel(folder, manifest, preprocess, options);
  }

  /** The exported towers: `image`, `text`... */
  get modalities() {
    return [...this.manifest.modalities];
  }

  /** The width of every tower's vectors. */
  get dim() {
    return this.manifest.dim;
  }

  /** model.json's description of a tower, or an error naming the ones there are. */
  tower(modality) {
    if (!this.manifest.modalities.includes(modality)) {
      throw new Error(
        `this export (${this.manifest.model}) has no ${modality} tower: it has ${this.manifest.modalities.join(', ')}`,
      );
    }
    return this.manifest.towers[modality];
  }

  async session(modality) {
    this.tower(modality);
    if (!this.sessions.has(modality)) {
      const { threads, sessionOptions } = this.options;
      const options = { executionProviders: ['cpu'], ...sessionOptions };
      if (threads !== undefined) options.intraOpNumThreads = threads;
      const path = join(this.folder, this.manifest.towers[modality].file);
      this.sessions.set(modality, ort.InferenceSession.create(path, options));
    }
    return this.sessions.get(modality);
  }

  async run(modality, feeds, { raw = false, dimensions } = {}) {
    const session = await this.session(modality);
    // Matryoshka: cut the vector before normalisation, then normalise, as the server does.
    const output = raw || dimensions !== undefined ? 'raw_embedding' : 'embedding';
    const tensors = {};
    for (const [name, { data, dims, type }] of Object.entries(feeds)) {
      tensors[name] = new ort.Tensor(type, data, dims);
    }
    const result = await session.run(tensors, [output]);
    return rowsOf(result[output], { raw, dimensions });
  }

  checkDimensions(dimensions) {
    if (dimensions === undefined) return;
    if (!Number.isInteger(dimensions) || dimensions < 1 || dimensions > this.dim) {
      throw new RangeError(`dimensions ${dimensions}: must be an integer from 1 to ${this.dim}`);
    }
  }

  /**
   * Embed texts.
   * @param {string[]} texts
   * @param {object} [options]
   * @param {boolean} [options.raw]  the vectors before L2 normalisation (`raw_embedding`)
   * @param {number} [options.dimensions]  keep the first d values, renormalised
   * @param {string} [options.promptName]  a sentence-transformers prompt (default: the model's)
   * @param {number} [options.batchSize]  texts per graph run (default 32)
   * @returns {Promise<Float32Array[]>} one vector per text, in order
   */
  async embedTexts(texts, { raw = false, dimensions, promptName, batchSize = 32 } = {}) {
    this.checkDimensions(dimensions);
    texts.forEach((text, i) => {
      if (typeof text !== 'string') throw new InputError(`text[${i}]`, `not a string (${typeof text})`);
    });
    const preparer = this.textPreparer();
    const out = [];
    for (let start = 0; start < texts.length; start += batchSize) {
      const batch = texts.slice(start, start + batchSize);
      const feeds = await preparer.feeds(batch, { promptName });
      out.push(...(await this.run('text', feeds, { raw, dimensions })));
    }
    return out;
  }

  /**
   * Embed images.
   * @param {(string | Uint8Array)[]} images  file paths, or the bytes of image files
   * @param {object} [options]
   * @param {boolean} [options.raw]
   * @param {number} [options.dimensions]
   * @param {number} [options.batchSize]  images per graph run (default 16)
   * @returns {Promise<Float32Array[]>}
   */
  async embedImages(images, { raw = false, dimensions, batchSize = 16 } = {}) {
    this.checkDimensions(dimensions);
    this.tower('image');
    const recipe = this.preprocess.image;
    const [height, width] = recipe.output_size;
    const size = 3 * height * width;
    const out = [];
    for (let start = 0; start < images.length; start += batchSize) {
      const batch = images.slice(start, start + batchSize);
      const data = new Float32Array(batch.length * size);
      await Promise.all(
        batch.map((image, i) => {
          const item = `image[${start + i}]`;
          if (typeof image !== 'string' && !(image instanceof Uint8Array)) {
            throw new InputError(item, 'not a path or the bytes of an image file');
          }
          return imagePixels(image, recipe, this.imageTables, data, i * size, item);
        }),
      );
      const feeds = { [recipe.input]: { data, dims: [batch.length, 3, height, width], type: 'float32' } };
      out.push(...(await this.run('image', feeds, { raw, dimensions })));
    }
    return out;
  }

  /** The image recipe's float32 [3, H, W] input for one image, as the graph takes it. */
  async imageInput(image) {
    const [height, width] = this.preprocess.image.output_size;
    const data = new Float32Array(3 * height * width);
    await imagePixels(image, this.preprocess.image, this.imageTables, data, 0, 'image');
    return data;
  }

  textPreparer() {
    if (this.text === null) {
      this.tower('text');
      this.text = new TextPreparer(
        join(this.folder, this.preprocess.text.tokenizer),
        this.preprocess.text,
        this.manifest.towers.text.inputs,
        { fixText: this.options.fixText },
      );
    }
    return this.text;
  }

  /** The token ids of `texts` (cleaned, with special tokens, padded to the batch). */
  async tokenize(texts, { promptName } = {}) {
    const encodings = await this.textPreparer().encode(texts, { promptName });
    return encodings.map((e) => e.getIds());
  }

  /** Free the ONNX Runtime sessions. */
  async release() {
    const sessions = [...this.sessions.values()];
    this.sessions.clear();
    await Promise.all(sessions.map(async (s) => (await s).release()));
  }
}
