// The server over gRPC: KServe's Open Inference Protocol (`inference.GRPCInferenceService`)
// with @grpc/grpc-js. The proto ships in this package (proto/grpc_predict_v2.proto, a copy
// of the server's, checked equal by the tests), so an installed package needs nothing
// from the server's source.

import { fileURLToPath } from 'node:url';

import grpc from '@grpc/grpc-js';
import protoLoader from '@grpc/proto-loader';

import { GRPC_CODES, errorClassForGrpc, TimeoutError } from './errors.js';
import { elementBytes, float32Rows, rawBytesTensor } from './vectors.js';

export const PROTO_PATH = fileURLToPath(new URL('../proto/grpc_predict_v2.proto', import.meta.url));
const DEFAULT_ADDRESS = '127.0.0.1:8081';
const DEFAULT_TIMEOUT_MS = 60_000;

let service;

/** The generated service constructor, loaded once. */
function inferenceService() {
  if (service === undefined) {
    const definition = protoLoader.loadSync(PROTO_PATH, {
      keepCase: true,
      longs: Number,
      enums: String,
      defaults: true,
      oneofs: true,
    });
    service = grpc.loadPackageDefinition(definition).inference.GRPCInferenceService;
  }
  return service;
}

/** A data URL or base64 string as bytes; bytes as they are. */
function fileBytes(item, what) {
  if (typeof item === 'string') {
    const comma = item.startsWith('data:') ? item.indexOf(',') : -1;
    const payload = comma >= 0 ? item.slice(comma + 1) : item;
    return Buffer.from(payload, 'base64');
  }
  return elementBytes(item, what);
}

function requireModel(model) {
  if (typeof model !== 'string' || !model) {
    throw new TypeError('options.model: the Open Inference Protocol names the model in every call');
  }
  return model;
}

function parameter(value) {
  if (typeof value === 'boolean') return { bool_param: value };
  if (Number.isInteger(value)) return { int64_param: value };
  if (typeof value === 'number') return { double_param: value };
  return { string_param: String(value) };
}

export class HandspringGrpcClient {
  /**
   * @param {object} [options]
   * @param {string} [options.address]  host:port of `handspring serve --grpc-port` (default 127.0.0.1:8081)
   * @param {string} [options.apiKey]  sent as the metadata `authorization: Bearer ...`
   * @param {number} [options.timeoutMs]  per call (default 60 s), as the call's deadline
   * @param {grpc.ChannelCredentials} [options.credentials]  default: plaintext
   * @param {object} [options.channelOptions]  grpc-js channel options; the message size
   *   limits default to 64 MiB here (grpc-js's own is 4 MiB for answers)
   */
  constructor({
    address = DEFAULT_ADDRESS,
    apiKey,
    timeoutMs = DEFAULT_TIMEOUT_MS,
    credentials = grpc.credentials.createInsecure(),
    channelOptions = {},
  } = {}) {
    const Service = inferenceService();
    this.address = address;
    this.apiKey = apiKey;
    this.timeoutMs = timeoutMs;
    this.stub = new Service(address, credentials, {
      'grpc.max_receive_message_length': 64 * 1024 * 1024,
      'grpc.max_send_message_length': 64 * 1024 * 1024,
      ...channelOptions,
    });
  }

  /** One unary call; a failure becomes the HandspringError subclass for its status code. */
  call(method, request, { timeoutMs = this.timeoutMs } = {}) {
    const metadata = new grpc.Metadata();
    if (this.apiKey !== undefined) metadata.set('authorization', `Bearer ${this.apiKey}`);
    const deadline = new Date(Date.now() + timeoutMs);
    return new Promise((resolve, reject) => {
      this.stub[method](request, metadata, { deadline }, (error, answer) => {
        if (error) reject(this.callError(method, error, timeoutMs));
        else resolve(answer);
      });
    });
  }

  callError(method, error, timeoutMs) {
    const code = GRPC_CODES[error.code] ?? String(error.code);
    const retry = error.metadata?.get('retry-after')?.[0];
    const retryAfter = retry === undefined ? undefined : Number(retry);
    const ErrorClass = errorClassForGrpc(code, retryAfter);
    // A deadline grpc-js enforced itself: say which limit it was.
    const message =
      ErrorClass === TimeoutError && String(error.details).startsWith('Deadline exceeded')
        ? `${method}: no answer within ${timeoutMs} ms (${error.details})`
        : error.details || `${method}: ${code}`;
    return new ErrorClass(message, { code, grpcCode: error.code, retryAfter, cause: error });
  }

  async serverLive() {
    return (await this.call('ServerLive', {})).live;
  }

  async serverReady() {
    return (await this.call('ServerReady', {})).ready;
  }

  async modelReady(name, version = '') {
    return (await this.call('ModelReady', { name, version })).ready;
  }

  /** `{ name, version, extensions }` */
  async serverMetadata() {
    return this.call('ServerMetadata', {});
  }

  /** `{ name, versions, platform, inputs, outputs }`: the inputs a model takes (text, image...). */
  async modelMetadata(name, version = '') {
    return this.call('ModelMetadata', { name, version });
  }

  /**
   * ModelInfer with BYTES inputs sent raw (Triton's form), the embedding read back from
   * the raw little-endian float32.
   * @param {string} model
   * @param {Record<string, (string | Uint8Array)[]>} inputs  per input name (`text`, `image`,
   *   `audio`), its items: texts as strings, files as bytes (or data URLs / base64)
   * @param {object} [options]
   * @param {number} [options.dimensions]  keep the first d values, renormalised
   * @param {boolean} [options.normalize]  default true
   * @param {string} [options.version]
   * @param {number} [options.timeoutMs]
   * @returns {Promise<{ embeddings: Float32Array[], model: string, version: string }>} one
   *   row per item, the inputs' items in the order the object lists them
   */
  async infer(model, inputs, { dimensions, normalize, version = '', timeoutMs } = {}) {
    const tensors = [];
    const raw = [];
    for (const [name, items] of Object.entries(inputs)) {
      if (!Array.isArray(items)) throw new TypeError(`inputs.${name}: expected an array`);
      const elements = items.map((item, i) =>
        name === 'text' ? elementBytes(item, `${name}[${i}]`) : fileBytes(item, `${name}[${i}]`),
      );
      tensors.push({ name, datatype: 'BYTES', shape: [items.length] });
      raw.push(rawBytesTensor(elements));
    }
    const parameters = {};
    if (dimensions !== undefined) parameters.dimensions = parameter(dimensions);
    if (normalize !== undefined) parameters.normalize = parameter(normalize);
    const request = {
      model_name: model,
      model_version: version,
      inputs: tensors,
      raw_input_contents: raw,
      parameters,
      outputs: [{ name: 'embedding' }],
    };
    const answer = await this.call('ModelInfer', request, { timeoutMs });
    const output = answer.outputs[0];
    const [rows, dim] = output.shape;
    const embeddings = answer.raw_output_contents.length
      ? float32Rows(answer.raw_output_contents[0], rows, dim)
      : Array.from({ length: rows }, (_, r) =>
          Float32Array.from(output.contents.fp32_contents.slice(r * dim, (r + 1) * dim)),
        );
    return { embeddings, model: answer.model_name, version: answer.model_version };
  }

  /**
   * Text vectors, in order.
   * @param {string[]} texts
   * @param {{ model: string, dimensions?: number, normalize?: boolean, timeoutMs?: number }} options
   *   `model` is required: the protocol names the model in every call
   */
  async embedTexts(texts, { model, ...options } = {}) {
    return (await this.infer(requireModel(model), { text: texts }, options)).embeddings;
  }

  /**
   * Image vectors, in order.
   * @param {(Uint8Array | string)[]} images  the bytes of image files (or data URLs / base64)
   * @param {{ model: string, dimensions?: number, normalize?: boolean, timeoutMs?: number }} options
   */
  async embedImages(images, { model, ...options } = {}) {
    return (await this.infer(requireModel(model), { image: images }, options)).embeddings;
  }

  close() {
    this.stub.close();
  }
}
