import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { ProblemBody } from '../contracts/common.js';
import { isRedisUnavailable } from '../queue/redis.js';

export const PROBLEM_TYPE_BASE = 'https://cotune.dev/problems/';
const TITLES: Record<number, string> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  404: 'Not Found',
  405: 'Method Not Allowed',
  406: 'Not Acceptable',
  409: 'Conflict',
  413: 'Content Too Large',
  415: 'Unsupported Media Type',
  416: 'Range Not Satisfiable',
  422: 'Unprocessable Content',
  429: 'Too Many Requests',
  500: 'Internal Server Error',
  503: 'Service Unavailable',
};

/** An error that becomes an RFC 9457 problem+json response. */
export class HttpProblem extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    detail: string,
    readonly errors?: { field: string; message: string }[],
    readonly headers?: Record<string, string>,
  ) {
    super(detail);
    this.name = 'HttpProblem';
  }
}

export const notFound = (what: string, id: string) => new HttpProblem(404, 'not_found', `${what} ${id} does not exist`);
export const invalid = (field: string, message: string, status = 422, code = 'invalid_input') =>
  new HttpProblem(status, code, message, [{ field, message }]);

export function problemBody(status: number, code: string, detail: string | undefined, request: FastifyRequest, errors?: ProblemBody['errors']): ProblemBody {
  return {
    type: `${PROBLEM_TYPE_BASE}${code.replaceAll('_', '-')}`,
    title: TITLES[status] ?? (status >= 500 ? 'Server Error' : 'Client Error'),
    status,
    ...(detail ? { detail } : {}),
    instance: request.url,
    code,
    requestId: String(request.id),
    ...(errors && errors.length ? { errors } : {}),
  };
}

export function sendProblem(reply: FastifyReply, body: ProblemBody, headers?: Record<string, string>): FastifyReply {
  if (headers) reply.headers(headers);
  return reply.code(body.status).type('application/problem+json').send(body);
}

/** `/hyperparameters/lambda` → `hyperparameters.lambda`; the missing property for `required`. */
function fieldOf(error: { instancePath?: string; params?: Record<string, unknown> }, context: string | undefined): string {
  const parts = (error.instancePath ?? '').split('/').filter(Boolean);
  const missing = error.params?.missingProperty ?? error.params?.additionalProperty;
  if (typeof missing === 'string') parts.push(missing);
  const path = parts.join('.');
  if (context === 'body') return path || 'body';
  if (context === 'headers') return path ? `header ${path}` : 'headers';
  return path || context || 'request';
}

const FASTIFY_CODES: Record<string, { status: number; code: string }> = {
  FST_ERR_CTP_INVALID_MEDIA_TYPE: { status: 415, code: 'unsupported_media_type' },
  FST_ERR_CTP_BODY_TOO_LARGE: { status: 413, code: 'too_large' },
  FST_ERR_CTP_EMPTY_JSON_BODY: { status: 400, code: 'invalid_body' },
  FST_ERR_CTP_INVALID_JSON_BODY: { status: 400, code: 'invalid_body' },
  FST_REQ_FILE_TOO_LARGE: { status: 413, code: 'too_large' },
  FST_PARTS_LIMIT: { status: 413, code: 'too_large' },
  FST_FILES_LIMIT: { status: 413, code: 'too_large' },
  FST_INVALID_MULTIPART_CONTENT_TYPE: { status: 415, code: 'unsupported_media_type' },
};

// Busboy's parse errors carry no code; they mean the client sent a broken multipart body.
const MULTIPART_ERROR = /^(Multipart: |Unexpected end of (multipart data|form|file)|Malformed part header|Part terminated early)/;

/**
 * Core-library messages name absolute server paths; clients should see paths relative to what they
 * uploaded. Each root (most specific first) is removed; anything left under `hidden` is masked.
 */
export function scrubPaths(message: string, roots: string[], hidden: string): string {
  let out = message;
  for (const root of roots) out = out.replaceAll(`${root}/`, '').replaceAll(root, '.');
  return out.replaceAll(new RegExp(`${hidden.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}[^\\s"',;:)]*`, 'g'), '<server path>');
}

/** One error format for everything: validation, our problems, Redis outages, and 5xx (detail hidden). */
export function registerProblemHandlers(app: FastifyInstance): void {
  app.setErrorHandler((err: FastifyError & { validation?: unknown[]; validationContext?: string }, request, reply) => {
    if (err instanceof HttpProblem) {
      if (err.status >= 500) request.log.error({ err }, 'request failed');
      return sendProblem(reply, problemBody(err.status, err.code, err.message, request, err.errors), err.headers);
    }
    if (Array.isArray(err.validation)) {
      const errors = (err.validation as { instancePath?: string; params?: Record<string, unknown>; message?: string }[]).map((v) => ({
        field: fieldOf(v, err.validationContext),
        message: v.message ?? 'is invalid',
      }));
      const detail = errors.map((e) => `${e.field}: ${e.message}`).join('; ');
      return sendProblem(reply, problemBody(400, 'validation_failed', detail, request, errors));
    }
    if (isRedisUnavailable(err)) {
      request.log.warn({ err: { message: err.message } }, 'redis unavailable');
      return sendProblem(reply, problemBody(503, 'store_unavailable', 'The job store (Redis) is unreachable; retry shortly.', request), { 'retry-after': '2' });
    }
    if (!err.code && MULTIPART_ERROR.test(err.message ?? '')) {
      return sendProblem(reply, problemBody(400, 'invalid_multipart', `malformed multipart/form-data body: ${err.message}`, request, [{ field: 'body', message: err.message }]));
    }
    const known = err.code ? FASTIFY_CODES[err.code] : undefined;
    if (known) return sendProblem(reply, problemBody(known.status, known.code, err.message, request));
    const status = err.statusCode && err.statusCode >= 400 && err.statusCode < 500 ? err.statusCode : 500;
    if (status >= 500) {
      request.log.error({ err }, 'unhandled error');
      return sendProblem(reply, problemBody(500, 'internal', 'An unexpected error occurred; the request id identifies it in the logs.', request));
    }
    return sendProblem(reply, problemBody(status, 'bad_request', err.message, request));
  });
  app.setNotFoundHandler((request, reply) =>
    sendProblem(reply, problemBody(404, 'not_found', `No route for ${request.method} ${request.url.split('?')[0]}`, request)),
  );
}
