import { pino, type Logger, type LoggerOptions } from 'pino';
import type { Config } from './config.js';

/** Paths never written to logs: credentials in headers and the Redis URL (it may carry a password). */
export const REDACT_PATHS = [
  'req.headers.authorization',
  'req.headers["x-api-key"]',
  'req.headers.cookie',
  'headers.authorization',
  'config.redisUrl',
  'config.apiKeys',
  'redisUrl',
  'apiKeys',
];

/** Pino options shared by the API (Fastify builds its logger from them) and the workers. */
export function loggerOptions(config: Pick<Config, 'logLevel'>, name: string): LoggerOptions {
  return {
    name,
    level: config.logLevel,
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    base: { pid: process.pid },
  };
}

export function createLogger(config: Pick<Config, 'logLevel'>, name: string): Logger {
  return pino(loggerOptions(config, name));
}

/** Strip the password from a Redis URL for display. */
export function safeRedisUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = '***';
    return parsed.toString();
  } catch {
    return '[unparseable url]';
  }
}
