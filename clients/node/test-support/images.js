// Photo-like JPEGs made on the fly for the client tests: gradients, shapes and noise from
// a seeded generator (the reference vectors of the embedder tests come from Python's
// tests/support/images.py instead).

import sharp from 'sharp';

function generator(seed) {
  let state = seed >>> 0 || 1;
  return () => {
    // xorshift32: reproducible, good enough for pixels.
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return (state >>> 0) / 2 ** 32;
  };
}

/** The bytes of a photo-like JPEG of width x height. */
export function photoJpeg(width, height, seed) {
  const random = generator(seed);
  const pixels = Buffer.alloc(width * height * 3);
  const shapes = Array.from({ length: 8 }, () => ({
    x0: random() * width,
    y0: random() * height,
    w: random() * width * 0.5,
    h: random() * height * 0.5,
    colour: [random() * 255, random() * 255, random() * 255],
  }));
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      let colour = [200 * (x / width) + 30, 180 * (y / height) + 40, 120 * (1 - x / width) + 60];
      for (const s of shapes) {
        if (x >= s.x0 && x < s.x0 + s.w && y >= s.y0 && y < s.y0 + s.h) colour = s.colour;
      }
      for (let c = 0; c < 3; c++) {
        const noise = (random() - 0.5) * 12;
        pixels[(y * width + x) * 3 + c] = Math.max(0, Math.min(255, Math.round(colour[c] + noise)));
      }
    }
  }
  return sharp(pixels, { raw: { width, height, channels: 3 } })
    .jpeg({ quality: 90 })
    .toBuffer();
}
