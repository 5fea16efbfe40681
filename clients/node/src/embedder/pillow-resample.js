// Pillow's Image.resize for 8-bit RGB, to the bit: the exported models' image recipes are
// defined by Pillow's filters (preprocess.json `resize.pil_resample`), and no npm image
// library resamples as Pillow does (libvips' and jimp's kernels, supports and rounding
// differ). This follows Pillow 13's libImaging/Resample.c: separable passes in the order
// Pillow chooses, the filter's support widened by the scale factor when shrinking,
// coefficients normalised in float64 and then fixed-point with 22 fractional bits.

const PRECISION_BITS = 32 - 8 - 2;
const ONE = 2 ** PRECISION_BITS;
const HALF = 2 ** (PRECISION_BITS - 1);

function bicubic(x) {
  const a = -0.5;
  const t = Math.abs(x);
  if (t < 1) return ((a + 2) * t - (a + 3)) * t * t + 1;
  if (t < 2) return (((t - 5) * t + 8) * t - 4) * a;
  return 0;
}

function bilinear(x) {
  const t = Math.abs(x);
  return t < 1 ? 1 - t : 0;
}

function box(x) {
  return x > -0.5 && x <= 0.5 ? 1 : 0;
}

function hamming(x) {
  const t = Math.abs(x);
  if (t === 0) return 1;
  if (t >= 1) return 0;
  const p = t * Math.PI;
  // Pillow writes these constants as C floats (0.54f, 0.46f).
  return (Math.sin(p) / p) * (Math.fround(0.54) + Math.fround(0.46) * Math.cos(p));
}

function sinc(x) {
  if (x === 0) return 1;
  const p = x * Math.PI;
  return Math.sin(p) / p;
}

function lanczos(x) {
  return x >= -3 && x < 3 ? sinc(x) * sinc(x / 3) : 0;
}

/** Pillow's filters by their Image.Resampling name, with their support. */
export const FILTERS = {
  BOX: { filter: box, support: 0.5 },
  BILINEAR: { filter: bilinear, support: 1 },
  HAMMING: { filter: hamming, support: 1 },
  BICUBIC: { filter: bicubic, support: 2 },
  LANCZOS: { filter: lanczos, support: 3 },
};

/**
 * Per output pixel: the first input pixel, how many are used, and their fixed-point
 * weights (precompute_coeffs + normalize_coeffs_8bpc).
 */
function coefficients(inSize, outSize, { filter, support: baseSupport }) {
  const scale = inSize / outSize;
  const filterScale = Math.max(scale, 1);
  const support = baseSupport * filterScale;
  const kSize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const weights = new Int32Array(outSize * kSize);
  const row = new Float64Array(kSize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    const ss = 1 / filterScale;
    // C's (int) cast truncates toward zero.
    const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
    const xmax = Math.min(Math.trunc(center + support + 0.5), inSize) - xmin;
    let total = 0;
    for (let x = 0; x < xmax; x++) {
      const w = filter((x + xmin - center + 0.5) * ss);
      row[x] = w;
      total += w;
    }
    for (let x = 0; x < xmax; x++) {
      const w = total !== 0 ? row[x] / total : row[x];
      weights[xx * kSize + x] = Math.trunc(w < 0 ? -0.5 + w * ONE : 0.5 + w * ONE);
    }
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = xmax;
  }
  return { bounds, weights, kSize };
}

function clip8(sum) {
  // Pillow's clip8: an arithmetic shift of a 32-bit sum, then clamped by a lookup table.
  const v = Math.floor(sum / ONE);
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

function horizontal(src, width, channels, firstRow, rows, outWidth, coeffs) {
  const { bounds, weights, kSize } = coeffs;
  const out = new Uint8Array(outWidth * rows * channels);
  const sums = new Float64Array(channels);
  for (let y = 0; y < rows; y++) {
    const line = (y + firstRow) * width * channels;
    for (let xx = 0; xx < outWidth; xx++) {
      const xmin = bounds[xx * 2];
      const xmax = bounds[xx * 2 + 1];
      const k = xx * kSize;
      const to = (y * outWidth + xx) * channels;
      if (channels === 3) {
        // RGB, the only case the image recipes need: three sums in registers.
        let s0 = HALF;
        let s1 = HALF;
        let s2 = HALF;
        for (let x = 0, at = line + xmin * 3; x < xmax; x++, at += 3) {
          const w = weights[k + x];
          s0 += src[at] * w;
          s1 += src[at + 1] * w;
          s2 += src[at + 2] * w;
        }
        out[to] = clip8(s0);
        out[to + 1] = clip8(s1);
        out[to + 2] = clip8(s2);
        continue;
      }
      sums.fill(HALF);
      for (let x = 0; x < xmax; x++) {
        const w = weights[k + x];
        const at = line + (x + xmin) * channels;
        for (let c = 0; c < channels; c++) sums[c] += src[at + c] * w;
      }
      for (let c = 0; c < channels; c++) out[to + c] = clip8(sums[c]);
    }
  }
  return out;
}

function vertical(src, width, channels, outHeight, coeffs, rowOffset) {
  const { bounds, weights, kSize } = coeffs;
  const rowLength = width * channels;
  const out = new Uint8Array(rowLength * outHeight);
  const sums = new Float64Array(rowLength);
  for (let yy = 0; yy < outHeight; yy++) {
    const ymin = bounds[yy * 2] - rowOffset;
    const ymax = bounds[yy * 2 + 1];
    const k = yy * kSize;
    // Row by row: each input row is read in order, once per output row.
    sums.fill(HALF);
    for (let y = 0; y < ymax; y++) {
      const w = weights[k + y];
      const at = (y + ymin) * rowLength;
      for (let i = 0; i < rowLength; i++) sums[i] += src[at + i] * w;
    }
    const base = yy * rowLength;
    for (let i = 0; i < rowLength; i++) out[base + i] = clip8(sums[i]);
  }
  return out;
}

/**
 * Resize interleaved 8-bit pixels as Pillow's `Image.resize((outWidth, outHeight), filter)`.
 * @param {Uint8Array} pixels  row-major, `channels` values per pixel
 * @param {string} filterName  BICUBIC, BILINEAR, BOX, HAMMING or LANCZOS
 * @returns {Uint8Array}
 */
export function resize(pixels, width, height, channels, outWidth, outHeight, filterName) {
  const filter = FILTERS[filterName];
  if (filter === undefined) {
    throw new Error(`resize filter ${filterName}: not one of ${Object.keys(FILTERS).join(', ')}`);
  }
  const needHorizontal = outWidth !== width;
  const needVertical = outHeight !== height;
  if (!needHorizontal && !needVertical) return pixels;
  const vCoeffs = needVertical ? coefficients(height, outHeight, filter) : null;
  const hCoeffs = needHorizontal ? coefficients(width, outWidth, filter) : null;
  // Pillow 13 runs the vertical pass first when the height shrinks by more than twice
  // as many pixels as the width does; earlier Pillows always go horizontal first. The
  // order changes some pixels by one level.
  const shrinkY = height - outHeight;
  const verticalFirst = shrinkY > 0 && shrinkY > (width - outWidth) * 2;
  if (verticalFirst) {
    const rows = vertical(pixels, width, channels, outHeight, vCoeffs, 0);
    return needHorizontal ? horizontal(rows, width, channels, 0, outHeight, outWidth, hCoeffs) : rows;
  }
  if (!needHorizontal) return vertical(pixels, width, channels, outHeight, vCoeffs, 0);
  if (!needVertical) return horizontal(pixels, width, channels, 0, height, outWidth, hCoeffs);
  // Only the input rows the vertical pass reads go through the horizontal pass.
  const firstRow = vCoeffs.bounds[0];
  const lastRow = vCoeffs.bounds[outHeight * 2 - 2] + vCoeffs.bounds[outHeight * 2 - 1];
  const rows = horizontal(pixels, width, channels, firstRow, lastRow - firstRow, outWidth, hCoeffs);
  return vertical(rows, outWidth, channels, outHeight, vCoeffs, firstRow);
}
