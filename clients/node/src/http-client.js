// The server over HTTP: the OpenAI-compatible /v1/embeddings (vectors as base64 float32),
// Handspring's own /api/embed (a bad item gives a null row, not a failed request), the
// model list and the probes.

import { HandspringError, TimeoutError, UnavailableError, errorClassForStatus } from './errors.js';
import { base64Vector, fileForJson } from './vectors.js';

const DEFAULT_URL = 'http://127.0.0.1:8080';
const DEFAULT_TIMEOUT_MS = 60_000;

function retryAfterSeconds(headers) {
  const value = headers.get('retry-after');
  if (value === null) return undefined;
  const seconds = Number(value);
  return Number.isFinite(seconds) ? seconds : undefined;
}

/** The server's message from any of its contracts' error bodies. */
function messageOf(body, fallback) {
  if (body && typeof body === 'object') {
    const { error, detail, message } = body;
    if (error && typeof error === 'object' && typeof error.message === 'string') return error.message;
    if (typeof error === 'string') return error;
    if (typeof detail === 'string') return detail;
    if (Array.isArray(detail) && detail.length)
      return detail.map((d) => d.msg ?? JSON.stringify(d)).join('; ');
    if (typeof message === 'string') return message;
  }
  if (typeof body === 'string' && body) return body;
  return fallback;
}

export class HandspringClient {
  /**
   * @param {object} [options]
   * @param {string} [options.url]  the server's base URL (default http://127.0.0.1:8080)
   * @param {string} [options.apiKey]  sent as `Authorization: Bearer ...`
   * @param {number} [options.timeoutMs]  per request (default 60 s)
   * @param {Record<string, string>} [options.headers]  sent with every request
   * @param {typeof fetch} [options.fetch]  a fetch implementation (default: Node's)
   */
  constructor({
    url = DEFAULT_URL,
    apiKey,
    timeoutMs = DEFAULT_TIMEOUT_MS,
    headers = {},
    fetch: fetcher,
  } = {}) {
    this.url = url.replace(/\/+$/, '');
    this.apiKey = apiKey;
    this.timeoutMs = timeoutMs;
    this.headers = headers;
    this.fetch = fetcher ?? globalThis.fetch;
  }

  /**
   * One request; an answer that is not 2xx becomes the HandspringError subclass for its
   * status, with the server's message.
   * @returns {Promise<Response>}
   */
  async request(method, path, { body, signal, timeoutMs = this.timeoutMs } = {}) {
    const headers = { accept: 'application/json', ...this.headers };
    if (this.apiKey !== undefined) headers.authorization = `Bearer ${this.apiKey}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    const timeout = AbortSignal.timeout(timeoutMs);
    const signals = signal ? AbortSignal.any([timeout, signal]) : timeout;
    let response;
    try {
      response = await this.fetch(`${this.url}${path}`, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: signals,
      });
    } catch (error) {
      throw this.transportError(error, method, path, timeoutMs, timeout);
    }
    if (response.ok) return response;
    const text = await response.text();
    let parsed = text;
    try {
      parsed = JSON.parse(text);
    } catch {
      // Not JSON: the text is the message.
    }
    const ErrorClass = errorClassForStatus(response.status);
    const code = parsed && typeof parsed.error === 'object' ? (parsed.error.code ?? undefined) : undefined;
    throw new ErrorClass(messageOf(parsed, `${method} ${path}: HTTP ${response.status}`), {
      status: response.status,
      code,
      retryAfter: retryAfterSeconds(response.headers),
      body: parsed,
    });
  }

  transportError(error, method, path, timeoutMs, timeout) {
    if (error?.name === 'TimeoutError' || (error?.name === 'AbortError' && timeout.aborted)) {
      return new TimeoutError(`${method} ${path}: no answer within ${timeoutMs} ms`, { cause: error });
    }
    if (error?.name === 'AbortError') return error; // the caller's own signal
    const code = error?.cause?.code;
    return new UnavailableError(
      `${method} ${path}: cannot reach ${this.url}${code ? ` (${code})` : ''}: ${error?.cause?.message ?? error?.message}`,
      { code, cause: error },
    );
  }

  async json(method, path, options) {
    const response = await this.request(method, path, options);
    if (response.status === 204) return null;
    return response.json();
  }

  /**
   * Embed items with the OpenAI-compatible route.
   * @param {(string | Uint8Array)[]} inputs  texts; for other modalities, file bytes or
   *   strings (a data URL, base64, or a URL the server may fetch)
   * @param {object} [options]
   * @param {string} [options.model]  a served model's name (default: the server's choice)
   * @param {string} [options.modality]  `text` (default), `image`, `audio`...
   * @param {number} [options.dimensions]  keep the first d values, renormalised
   * @param {AbortSignal} [options.signal]
   * @returns {Promise<{ embeddings: Float32Array[], model: string, usage: object }>}
   */
  async embed(inputs, { model, modality = 'text', dimensions, signal, timeoutMs } = {}) {
    if (!Array.isArray(inputs)) throw new TypeError('inputs: expected an array');
    const body = {
      input: inputs.map((item, i) => (modality === 'text' ? item : fileForJson(item, `input[${i}]`))),
      encoding_format: 'base64',
    };
    if (model !== undefined) body.model = model;
    if (modality !== 'text') body.modality = modality;
    if (dimensions !== undefined) body.dimensions = dimensions;
    const answer = await this.json('POST', '/v1/embeddings', { body, signal, timeoutMs });
    const rows = [...answer.data].sort((a, b) => a.index - b.index);
    return {
      embeddings: rows.map((row) =>
        typeof row.embedding === 'string' ? base64Vector(row.embedding) : Float32Array.from(row.embedding),
      ),
      model: answer.model,
      usage: answer.usage,
    };
  }

  /** Text vectors, in order. See embed() for the options. */
  async embedTexts(texts, options = {}) {
    return (await this.embed(texts, { ...options, modality: 'text' })).embeddings;
  }

  /**
   * Image vectors, in order.
   * @param {(Uint8Array | string)[]} images  the bytes of image files (e.g. from
   *   fs.readFile), or data URLs / base64 strings
   */
  async embedImages(images, options = {}) {
    return (await this.embed(images, { ...options, modality: 'image' })).embeddings;
  }

  /**
   * Embed with Handspring's own route, where a bad item does not fail the others: its
   * row is null and `errors` names it.
   * @param {string} modality  `text`, `image`, `audio`, `depth`, `thermal` or `imu`
   * @param {(string | Uint8Array)[]} inputs
   * @param {object} [options]
   * @param {string} [options.model]
   * @param {boolean} [options.normalize]  default true
   * @param {number} [options.dimensions]
   * @returns {Promise<{ embeddings: (Float32Array | null)[], errors: { index: number, item: string, reason: string }[], model: string, dim: number }>}
   */
  async embedEach(modality, inputs, { model, normalize, dimensions, signal, timeoutMs } = {}) {
    const body = {
      modality,
      inputs: inputs.map((item, i) => (modality === 'text' ? item : fileForJson(item, `inputs[${i}]`))),
    };
    if (model !== undefined) body.model = model;
    if (normalize !== undefined) body.normalize = normalize;
    if (dimensions !== undefined) body.dimensions = dimensions;
    const answer = await this.json('POST', '/api/embed', { body, signal, timeoutMs });
    return {
      embeddings: answer.embeddings.map((row) => (row === null ? null : Float32Array.from(row))),
      errors: answer.errors ?? [],
      model: answer.model,
      dim: answer.dim,
    };
  }

  /** The names of the served models. */
  async models({ signal } = {}) {
    const answer = await this.json('GET', '/v1/models', { signal });
    return answer.data.map((m) => m.id);
  }

  /** Whether the server answers at all (needs no key). */
  async live({ signal } = {}) {
    return this.probe('/.well-known/live', signal);
  }

  /** Whether every model is loaded or loadable (needs no key). */
  async ready({ signal } = {}) {
    return this.probe('/.well-known/ready', signal);
  }

  async probe(path, signal) {
    try {
      await this.request('GET', path, { signal });
      return true;
    } catch (error) {
      if (error instanceof HandspringError && error.status !== undefined) return false;
      throw error;
    }
  }
}
