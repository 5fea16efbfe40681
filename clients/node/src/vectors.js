// Vectors and items on the wire: little-endian float32, base64, Triton's BYTES elements.

/** Little-endian float32 bytes as `rows` vectors of `dim` values (copied, aligned). */
export function float32Rows(bytes, rows, dim) {
  if (bytes.length !== rows * dim * 4) {
    throw new Error(`expected ${rows * dim * 4} bytes of float32 for [${rows}, ${dim}], got ${bytes.length}`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = [];
  for (let r = 0; r < rows; r++) {
    const row = new Float32Array(dim);
    for (let i = 0; i < dim; i++) row[i] = view.getFloat32((r * dim + i) * 4, true);
    out.push(row);
  }
  return out;
}

/** A base64 string of little-endian float32 (OpenAI's `encoding_format: "base64"`). */
export function base64Vector(text) {
  const bytes = Buffer.from(text, 'base64');
  return float32Rows(bytes, 1, bytes.length / 4)[0];
}

/**
 * An image or other file for a JSON body: bytes become base64; strings (a data URL,
 * base64, or an http(s) URL for a server run with --fetch-urls) go as they are.
 */
export function fileForJson(item, what) {
  if (typeof item === 'string') return item;
  if (item instanceof Uint8Array)
    return Buffer.from(item.buffer, item.byteOffset, item.byteLength).toString('base64');
  throw new TypeError(
    `${what}: expected the bytes of a file (Buffer, Uint8Array) or a string, got ${typeof item}`,
  );
}

/** An item as the bytes of a BYTES element: strings as UTF-8, bytes as they are. */
export function elementBytes(item, what) {
  if (typeof item === 'string') return Buffer.from(item, 'utf8');
  if (item instanceof Uint8Array) return Buffer.from(item.buffer, item.byteOffset, item.byteLength);
  throw new TypeError(`${what}: expected a string or bytes (Buffer, Uint8Array), got ${typeof item}`);
}

/** Triton's raw form of a BYTES tensor: each element as a 4-byte little-endian length, then its bytes. */
export function rawBytesTensor(elements) {
  const parts = [];
  for (const element of elements) {
    const length = Buffer.alloc(4);
    length.writeUInt32LE(element.length);
    parts.push(length, element);
  }
  return Buffer.concat(parts);
}
