// Image files to 8-bit RGB pixels, as preprocess.json's `image.decode` says and as Pillow
// decodes them: sharp (libvips) reads the file, and the steps where libvips and Pillow
// differ (CMYK, 16-bit grey, transparency) are done here with Pillow's integer arithmetic.
// Measured against Pillow 13 on JPEG (baseline, progressive, every EXIF orientation), PNG
// (RGB, RGBA, palette with and without tRNS, grey, grey + alpha, 16-bit grey), CMYK JPEG,
// WebP and GIF: the same 8-bit pixels.

import { readFile } from 'node:fs/promises';
import sharp from 'sharp';

import { ImageError } from '../errors.js';

/**
 * @typedef {object} DecodeRecipe preprocess.json's `image.decode`
 * @property {boolean} exif_orientation
 * @property {'composite_on_white' | 'drop'} alpha
 * @property {number | null} [max_pixels]
 */

/**
 * @typedef {object} RgbImage
 * @property {Uint8Array} pixels  interleaved RGB, row-major
 * @property {number} width
 * @property {number} height
 */

/**
 * @param {string | Uint8Array} source  a file path, or the bytes of an image file
 * @param {DecodeRecipe} recipe
 * @param {string} item  how errors name the input, e.g. `image[3]`
 * @returns {Promise<RgbImage>}
 */
export async function decodeImage(source, recipe, item) {
  const bytes = typeof source === 'string' ? await readImageFile(source, item) : source;
  const limit = recipe.max_pixels ?? false;
  let meta;
  try {
    meta = await sharp(bytes, { limitInputPixels: limit }).metadata();
  } catch (error) {
    throw new ImageError(item, 'not an image, or in a format that is not supported', error);
  }
  if (limit && meta.width * meta.height > limit) {
    throw new ImageError(
      item,
      `too large: ${meta.width}x${meta.height} is over the limit of ${limit} pixels`,
    );
  }
  // Pillow applies no ICC profile; libvips would convert to sRGB through an embedded one.
  const open = () => {
    const image = sharp(bytes, { limitInputPixels: limit, ignoreIcc: true, failOn: 'error' });
    return recipe.exif_orientation ? image.autoOrient() : image;
  };
  try {
    if (meta.space === 'cmyk') {
      // Kept as CMYK by libvips (which would use a CMYK profile), converted as Pillow does.
      return cmykToRgb(await raw(open().pipelineColourspace('cmyk').toColourspace('cmyk')));
    }
    if (meta.depth === 'ushort' && meta.channels === 1) {
      return grey16ToRgb(await raw(open().toColourspace('grey16'), 'ushort'));
    }
    const decoded = await raw(open());
    return toRgb(decoded, recipe.alpha);
  } catch (error) {
    if (error instanceof ImageError) throw error;
    throw new ImageError(item, 'the image could not be decoded (truncated or corrupt)', error);
  }
}

async function readImageFile(path, item) {
  try {
    return await readFile(path);
  } catch (error) {
    throw new ImageError(item, `cannot read ${path}: ${error.code ?? error.message}`, error);
  }
}

async function raw(image, depth = 'uchar') {
  const { data, info } = await image.raw({ depth }).toBuffer({ resolveWithObject: true });
  const values = depth === 'ushort' ? new Uint16Array(data.buffer, data.byteOffset, data.length / 2) : data;
  return { values, width: info.width, height: info.height, channels: info.channels };
}

/** libvips gives grey as sRGB (grey replicated, as Pillow's convert does) and keeps alpha. */
function toRgb({ values, width, height, channels }, alpha) {
  if (channels === 3) return { pixels: values, width, height };
  if (channels !== 4) {
    throw new Error(`decoded image with ${channels} channels: expected 3 or 4 after sRGB`);
  }
  const count = width * height;
  const pixels = new Uint8Array(count * 3);
  for (let i = 0; i < count; i++) {
    const a = values[i * 4 + 3];
    for (let c = 0; c < 3; c++) {
      const v = values[i * 4 + c];
      pixels[i * 3 + c] = alpha === 'composite_on_white' ? overWhite(v, a) : v;
    }
  }
  return { pixels, width, height };
}

/**
 * One channel of Pillow's Image.alpha_composite(opaque white, RGBA) (AlphaComposite.c:
 * 7 extra bits of precision, rounded divisions by 255).
 */
function overWhite(v, a) {
  if (a === 0) return 255;
  const blend = 255 * (255 - a);
  const outA255 = a * 255 + blend;
  const coef1 = Math.floor((a * 255 * 255 * 128) / outA255);
  const coef2 = 255 * 128 - coef1;
  const tmp = v * coef1 + 255 * coef2 + (0x80 << 7);
  return (((tmp >>> 8) + tmp) >>> 8) >>> 7;
}

/** Pillow's convert("RGB") of CMYK (Convert.c cmyk2rgb): no ICC profile. */
function cmykToRgb({ values, width, height }) {
  const count = width * height;
  const pixels = new Uint8Array(count * 3);
  for (let i = 0; i < count; i++) {
    const nk = 255 - values[i * 4 + 3];
    for (let c = 0; c < 3; c++) {
      const tmp = values[i * 4 + c] * nk + 128;
      const v = nk - (((tmp >> 8) + tmp) >> 8);
      pixels[i * 3 + c] = v < 0 ? 0 : v;
    }
  }
  return { pixels, width, height };
}

/** Pillow opens 16-bit grey as I;16, and its convert("RGB") clips each value at 255. */
function grey16ToRgb({ values, width, height }) {
  const count = width * height;
  const pixels = new Uint8Array(count * 3);
  for (let i = 0; i < count; i++) pixels.fill(Math.min(values[i], 255), i * 3, i * 3 + 3);
  return { pixels, width, height };
}
