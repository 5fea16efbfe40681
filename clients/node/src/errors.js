// Errors of the client and of the in-process embedder. Every server error is a
// HandspringError subclass chosen by what the caller can do about it, carrying the HTTP
// status or the gRPC status code and the server's own message.

/** gRPC status codes by number (grpc/status.h), for names in messages and `.code`. */
export const GRPC_CODES = [
  'OK',
  'CANCELLED',
  'UNKNOWN',
  'INVALID_ARGUMENT',
  'DEADLINE_EXCEEDED',
  'NOT_FOUND',
  'ALREADY_EXISTS',
  'PERMISSION_DENIED',
  'RESOURCE_EXHAUSTED',
  'FAILED_PRECONDITION',
  'ABORTED',
  'OUT_OF_RANGE',
  'UNIMPLEMENTED',
  'INTERNAL',
  'UNAVAILABLE',
  'DATA_LOSS',
  'UNAUTHENTICATED',
];

export class HandspringError extends Error {
  /**
   * @param {string} message  the server's message, or what went wrong on the way
   * @param {object} [details]
   * @param {number} [details.status]  HTTP status, over HTTP
   * @param {string} [details.code]  gRPC status name (`INVALID_ARGUMENT`...) over gRPC; the
   *   error's `code` field over HTTP when the contract has one (`model_not_found`...)
   * @param {number} [details.grpcCode]  the gRPC status number, over gRPC
   * @param {number} [details.retryAfter]  seconds, when the server said when to retry
   * @param {unknown} [details.body]  the error body as the server sent it
   * @param {unknown} [details.cause]
   */
  constructor(message, { status, code, grpcCode, retryAfter, body, cause } = {}) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = new.target.name;
    this.status = status;
    this.code = code;
    this.grpcCode = grpcCode;
    this.retryAfter = retryAfter;
    this.body = body;
  }
}

/** The request was refused as it stands: bad input, bad parameter (400, 422; INVALID_ARGUMENT). */
export class InvalidRequestError extends HandspringError {}

/** The API key is missing or wrong (401; UNAUTHENTICATED). */
export class AuthenticationError extends HandspringError {}

/** The model (or route) is not served (404; NOT_FOUND). */
export class NotFoundError extends HandspringError {}

/** Too many items, or a message or item too large (413; RESOURCE_EXHAUSTED without retry-after). */
export class TooLargeError extends HandspringError {}

/** The server is overloaded: retry after `retryAfter` seconds (429; RESOURCE_EXHAUSTED with retry-after). */
export class OverloadedError extends HandspringError {}

/** The model cannot be loaded, the server is stopping, or it cannot be reached (503; UNAVAILABLE). */
export class UnavailableError extends HandspringError {}

/** The request took longer than the client's or the server's timeout (504; DEADLINE_EXCEEDED). */
export class TimeoutError extends HandspringError {}

/** The server failed (500; INTERNAL, UNKNOWN...). */
export class ServerError extends HandspringError {}

/** An input the in-process embedder cannot use: `item` names it (`image[2]`), `reason` says why. */
export class InputError extends Error {
  constructor(item, reason, cause) {
    super(`${item}: ${reason}`, cause === undefined ? undefined : { cause });
    this.name = new.target.name;
    this.item = item;
    this.reason = reason;
  }
}

/** An image that cannot be read, decoded or is over the size limit. */
export class ImageError extends InputError {}

/** The class for an HTTP status. */
export function errorClassForStatus(status) {
  if (status === 400 || status === 422 || status === 405) return InvalidRequestError;
  if (status === 401 || status === 403) return AuthenticationError;
  if (status === 404) return NotFoundError;
  if (status === 413) return TooLargeError;
  if (status === 429) return OverloadedError;
  if (status === 503 || status === 502) return UnavailableError;
  if (status === 504 || status === 408) return TimeoutError;
  return ServerError;
}

/** The class for a gRPC status name; RESOURCE_EXHAUSTED depends on whether retry-after came. */
export function errorClassForGrpc(code, retryAfter) {
  switch (code) {
    case 'INVALID_ARGUMENT':
    case 'OUT_OF_RANGE':
    case 'FAILED_PRECONDITION':
      return InvalidRequestError;
    case 'UNAUTHENTICATED':
    case 'PERMISSION_DENIED':
      return AuthenticationError;
    case 'NOT_FOUND':
    case 'UNIMPLEMENTED':
      return NotFoundError;
    case 'RESOURCE_EXHAUSTED':
      return retryAfter === undefined ? TooLargeError : OverloadedError;
    case 'UNAVAILABLE':
      return UnavailableError;
    case 'DEADLINE_EXCEEDED':
      return TimeoutError;
    default:
      return ServerError;
  }
}
