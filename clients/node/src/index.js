// The client for a Handspring server, over HTTP and gRPC. The in-process embedder for
// exported models is `handspring/embedder` (it needs onnxruntime-node, sharp and
// tokenizers, which the client does not).

export { HandspringClient } from './http-client.js';
export { HandspringGrpcClient, PROTO_PATH } from './grpc-client.js';
export {
  AuthenticationError,
  HandspringError,
  ImageError,
  InputError,
  InvalidRequestError,
  NotFoundError,
  OverloadedError,
  ServerError,
  TimeoutError,
  TooLargeError,
  UnavailableError,
} from './errors.js';
