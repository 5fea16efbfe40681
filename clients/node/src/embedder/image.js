// preprocess.json's `image` section (docs/export.md): decode, resize, crop, normalise,
// into the float32 NCHW rows the image graph takes.

import { decodeImage } from './decode.js';
import { resize } from './pillow-resample.js';

/**
 * (width, height) after the resize step, or null for none.
 * @param {number} width
 * @param {number} height
 * @param {object} spec  preprocess.json `image.resize`
 */
export function resizedSize(width, height, spec) {
  switch (spec.mode) {
    case 'shortest_edge': {
      const edge = spec.size;
      const short = Math.min(width, height);
      const long = Math.max(width, height);
      // float64, left to right, truncated: the two conventions round differently.
      const newLong =
        spec.long_side === 'floor(size * long / short)'
          ? Math.trunc((edge * long) / short)
          : Math.trunc((long / short) * edge);
      return width <= height ? [edge, newLong] : [newLong, edge];
    }
    case 'squash':
      return [spec.width, spec.height];
    case 'keep_ratio': {
      const ratios = [height / spec.height, width / spec.width];
      const ratio = spec.fit === 'inside' ? Math.max(...ratios) : Math.min(...ratios);
      return [Math.max(1, roundHalfEven(width / ratio)), Math.max(1, roundHalfEven(height / ratio))];
    }
    case 'none':
      return null;
    default:
      throw new Error(`preprocess.json image.resize.mode ${JSON.stringify(spec.mode)} is not known`);
  }
}

function roundHalfEven(x) {
  const floor = Math.floor(x);
  const diff = x - floor;
  if (diff > 0.5) return floor + 1;
  if (diff < 0.5) return floor;
  return floor % 2 === 0 ? floor : floor + 1;
}

/**
 * The centre crop (or padding) of preprocess.json's `image.crop`, as interleaved RGB.
 */
export function centerCrop(pixels, width, height, crop) {
  const out = new Uint8Array(crop.width * crop.height * 3).fill(crop.pad_value);
  const axes = [
    [height, crop.height],
    [width, crop.width],
  ].map(([n, c]) => {
    if (n >= c) {
      const start = crop.offset === 'floor' ? Math.floor((n - c) / 2) : roundHalfEven((n - c) / 2);
      return { from: start, to: 0, length: c };
    }
    const pad = c - n;
    const before = crop.odd_padding_pixel === 'before' ? Math.ceil(pad / 2) : Math.floor(pad / 2);
    return { from: 0, to: before, length: n };
  });
  const [rows, cols] = axes;
  for (let y = 0; y < rows.length; y++) {
    const src = ((y + rows.from) * width + cols.from) * 3;
    const dst = ((y + rows.to) * crop.width + cols.to) * 3;
    out.set(pixels.subarray(src, src + cols.length * 3), dst);
  }
  return { pixels: out, width: crop.width, height: crop.height };
}

/**
 * Per channel, the float32 value of each 8-bit level: float32(v * rescale) with the
 * product in float64, then (x - float32(mean)) / float32(std) in float32.
 */
export function levelTables(recipe) {
  const f = Math.fround;
  return [0, 1, 2].map((c) => {
    const mean = f(recipe.mean[c]);
    const std = f(recipe.std[c]);
    const table = new Float32Array(256);
    for (let v = 0; v < 256; v++) table[v] = f(f(f(v * recipe.rescale_factor) - mean) / std);
    return table;
  });
}

/**
 * One image as the graph's float32 [3, H, W] rows, written into `out` at `offset`.
 * @param {string | Uint8Array} source
 * @param {object} recipe  preprocess.json `image`
 * @param {Float32Array[]} tables  levelTables(recipe)
 * @param {Float32Array} out
 * @param {number} offset
 * @param {string} item
 */
export async function imagePixels(source, recipe, tables, out, offset, item) {
  let image = await decodeImage(source, recipe.decode, item);
  const size = resizedSize(image.width, image.height, recipe.resize);
  if (size !== null) {
    const [w, h] = size;
    const pixels = resize(image.pixels, image.width, image.height, 3, w, h, recipe.resize.pil_resample);
    image = { pixels, width: w, height: h };
  }
  if (recipe.crop) image = centerCrop(image.pixels, image.width, image.height, recipe.crop);
  const [outHeight, outWidth] = recipe.output_size;
  if (image.width !== outWidth || image.height !== outHeight) {
    throw new Error(
      `${item}: preprocessed to ${image.width}x${image.height}, but the graph takes ${outWidth}x${outHeight}`,
    );
  }
  const plane = outWidth * outHeight;
  for (let c = 0; c < 3; c++) {
    const table = tables[c];
    const base = offset + c * plane;
    for (let i = 0; i < plane; i++) out[base + i] = table[image.pixels[i * 3 + c]];
  }
}
