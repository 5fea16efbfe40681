// Types of the client (`handspring`). The in-process embedder: `handspring/embedder`.

import type { ChannelCredentials, ChannelOptions } from '@grpc/grpc-js';

export interface HandspringErrorDetails {
  status?: number;
  code?: string;
  grpcCode?: number;
  retryAfter?: number;
  body?: unknown;
  cause?: unknown;
}

/** Every error the server sends, and every failure to reach it. */
export class HandspringError extends Error {
  constructor(message: string, details?: HandspringErrorDetails);
  /** HTTP status (over HTTP). */
  status?: number;
  /** Over gRPC the status name (`INVALID_ARGUMENT`...); over HTTP the error body's `code`. */
  code?: string;
  /** The gRPC status number (over gRPC). */
  grpcCode?: number;
  /** Seconds the server asked to wait before retrying. */
  retryAfter?: number;
  /** The error body as the server sent it (over HTTP). */
  body?: unknown;
}
/** 400, 422; INVALID_ARGUMENT. */
export class InvalidRequestError extends HandspringError {}
/** 401; UNAUTHENTICATED. */
export class AuthenticationError extends HandspringError {}
/** 404; NOT_FOUND. */
export class NotFoundError extends HandspringError {}
/** 413; RESOURCE_EXHAUSTED without retry-after. */
export class TooLargeError extends HandspringError {}
/** 429; RESOURCE_EXHAUSTED with retry-after. */
export class OverloadedError extends HandspringError {}
/** 503; UNAVAILABLE; the server cannot be reached. */
export class UnavailableError extends HandspringError {}
/** 504; DEADLINE_EXCEEDED; the client's timeout. */
export class TimeoutError extends HandspringError {}
/** 500; INTERNAL and other codes. */
export class ServerError extends HandspringError {}

/** A bad input of the in-process embedder. */
export class InputError extends Error {
  constructor(item: string, reason: string, cause?: unknown);
  /** e.g. `image[2]` */
  item: string;
  reason: string;
}
export class ImageError extends InputError {}

/** Texts are strings; files (images, sounds) are their bytes, or data URLs / base64. */
export type Item = string | Uint8Array;

export interface HttpClientOptions {
  /** Default http://127.0.0.1:8080 */
  url?: string;
  /** Sent as `Authorization: Bearer ...`. */
  apiKey?: string;
  /** Per request; default 60 000. */
  timeoutMs?: number;
  headers?: Record<string, string>;
  fetch?: typeof fetch;
}

export interface EmbedOptions {
  model?: string;
  dimensions?: number;
  signal?: AbortSignal;
  timeoutMs?: number;
}

export class HandspringClient {
  constructor(options?: HttpClientOptions);
  embed(
    inputs: Item[],
    options?: EmbedOptions & { modality?: string },
  ): Promise<{
    embeddings: Float32Array[];
    model: string;
    usage: { prompt_tokens: number; total_tokens: number };
  }>;
  embedTexts(texts: string[], options?: EmbedOptions): Promise<Float32Array[]>;
  embedImages(images: Item[], options?: EmbedOptions): Promise<Float32Array[]>;
  embedEach(
    modality: string,
    inputs: Item[],
    options?: EmbedOptions & { normalize?: boolean },
  ): Promise<{
    embeddings: (Float32Array | null)[];
    errors: { index: number; item: string; reason: string }[];
    model: string;
    dim: number;
  }>;
  models(options?: { signal?: AbortSignal }): Promise<string[]>;
  live(options?: { signal?: AbortSignal }): Promise<boolean>;
  ready(options?: { signal?: AbortSignal }): Promise<boolean>;
}

export interface GrpcClientOptions {
  /** host:port; default 127.0.0.1:8081 */
  address?: string;
  /** Sent as the metadata `authorization: Bearer ...`. */
  apiKey?: string;
  /** Each call's deadline; default 60 000. */
  timeoutMs?: number;
  credentials?: ChannelCredentials;
  channelOptions?: ChannelOptions;
}

export interface InferOptions {
  dimensions?: number;
  normalize?: boolean;
  version?: string;
  timeoutMs?: number;
}

export interface TensorMetadata {
  name: string;
  datatype: string;
  shape: number[];
}

/** The absolute path of the packaged grpc_predict_v2.proto (KServe's Open Inference Protocol). */
export const PROTO_PATH: string;

export class HandspringGrpcClient {
  constructor(options?: GrpcClientOptions);
  serverLive(): Promise<boolean>;
  serverReady(): Promise<boolean>;
  modelReady(name: string, version?: string): Promise<boolean>;
  serverMetadata(): Promise<{ name: string; version: string; extensions: string[] }>;
  modelMetadata(
    name: string,
    version?: string,
  ): Promise<{
    name: string;
    versions: string[];
    platform: string;
    inputs: TensorMetadata[];
    outputs: TensorMetadata[];
  }>;
  /** One row per item, the inputs' items in the order the object lists them. */
  infer(
    model: string,
    inputs: Partial<Record<'text' | 'image' | 'audio', Item[]>>,
    options?: InferOptions,
  ): Promise<{ embeddings: Float32Array[]; model: string; version: string }>;
  embedTexts(texts: string[], options: InferOptions & { model: string }): Promise<Float32Array[]>;
  embedImages(images: Item[], options: InferOptions & { model: string }): Promise<Float32Array[]>;
  close(): void;
}
