// Types of the in-process embedder (`handspring/embedder`).

import type { InferenceSession } from 'onnxruntime-node';

export interface ExportedModelOptions {
  /** ONNX Runtime intra-op threads (default: its own choice). */
  threads?: number;
  /** A stand-in for Python's ftfy.fix_text, for models whose cleaning names it. */
  fixText?: (text: string) => string;
  sessionOptions?: InferenceSession.SessionOptions;
}

export interface VectorOptions {
  /** The vectors before L2 normalisation (`raw_embedding`). */
  raw?: boolean;
  /** Keep the first d values, renormalised (cut only, with `raw`). */
  dimensions?: number;
  batchSize?: number;
}

export class ExportedModel {
  static load(folder: string, options?: ExportedModelOptions): Promise<ExportedModel>;
  readonly folder: string;
  /** model.json */
  readonly manifest: Record<string, any>;
  /** preprocess.json */
  readonly preprocess: Record<string, any>;
  readonly modalities: string[];
  readonly dim: number;
  embedTexts(texts: string[], options?: VectorOptions & { promptName?: string }): Promise<Float32Array[]>;
  /** File paths, or the bytes of image files. */
  embedImages(images: (string | Uint8Array)[], options?: VectorOptions): Promise<Float32Array[]>;
  /** The graph's float32 [3, H, W] input for one image. */
  imageInput(image: string | Uint8Array): Promise<Float32Array>;
  /** Token ids (cleaned, special tokens added, padded to the batch's longest). */
  tokenize(texts: string[], options?: { promptName?: string }): Promise<number[][]>;
  release(): Promise<void>;
}
