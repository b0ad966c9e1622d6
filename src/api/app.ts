import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import AjvCompiler from '@fastify/ajv-compiler';
import multipart from '@fastify/multipart';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify';
import type { Redis } from 'ioredis';
import type { Config } from '../config.js';
import { componentSchemas } from '../contracts/index.js';
import { loggerOptions } from '../logger.js';
import { createApiRedis, evictionPolicyWhenReachable } from '../queue/redis.js';
import { createTrainingQueue } from '../queue/training-queue.js';
import { createDirStore, type BlobStore } from '../storage/blob-store.js';
import { makeContext, type ApiContext } from './context.js';
import { createMetrics } from './metrics.js';
import { HttpProblem, registerProblemHandlers } from './problem.js';
import { datasetRoutes } from './routes/datasets.js';
import { healthRoutes } from './routes/health.js';
import { jobRoutes } from './routes/jobs.js';
import { modelRoutes } from './routes/models.js';
import { EventHub } from './sse.js';
import { registerSwagger } from './swagger.js';

export interface AppDeps {
  /** Fail-fast Redis connection; created from config.redisUrl (and closed with the app) when absent. */
  redis?: Redis;
  store?: BlobStore;
  /** Fastify logger option; default: pino with the service options. */
  logger?: FastifyServerOptions['logger'];
  /** Skip the maxmemory-policy check (never in production). */
  skipEvictionCheck?: boolean;
}

declare module 'fastify' {
  interface FastifyInstance {
    cotune: ApiContext;
  }
}

const VERSION = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/**
 * Validators by part of the request: a querystring, params and headers arrive as strings and are
 * coerced to the schema's types, but a JSON body already has its types and is checked as sent,
 * so that `"lambda": null` is an error naming the field rather than a silent 0.
 */
const buildValidator: AjvCompiler.ValidatorFactory = (externalSchemas) => {
  const pool = AjvCompiler();
  const withCoercion = (coerceTypes: 'array' | false) =>
    pool(externalSchemas, { customOptions: { removeAdditional: false, useDefaults: true, allErrors: true, coerceTypes } });
  const [coercing, exact] = [withCoercion('array'), withCoercion(false)];
  return (route) => (route.httpPart === 'body' ? exact : coercing)(route);
};

/** Build the API (routes, OpenAPI, problem+json errors). Never listens; close() releases Redis. */
export async function buildApp(config: Config, deps: AppDeps = {}): Promise<FastifyInstance> {
  const app = Fastify({
    logger: deps.logger ?? loggerOptions(config, 'cotune-api'),
    requestIdHeader: 'x-request-id',
    genReqId: (req) => {
      const incoming = req.headers['x-request-id'];
      return typeof incoming === 'string' && REQUEST_ID.test(incoming) ? incoming : randomUUID();
    },
    schemaController: { compilersFactory: { buildValidator } },
    return503OnClosing: true,
    forceCloseConnections: true,
  }).withTypeProvider<TypeBoxTypeProvider>();

  const ownsRedis = !deps.redis;
  const redis = deps.redis ?? createApiRedis(config.redisUrl);
  // ioredis reports connection errors as events; logging them here keeps them from crashing the process.
  let lastRedisError = 0;
  redis.on('error', (err: Error) => {
    if (Date.now() - lastRedisError > 5000) app.log.warn({ err: { message: err.message } }, 'redis connection error');
    lastRedisError = Date.now();
  });
  // BullMQ caches a failed connection start-up (its INFO version check) for the Queue's lifetime, so a
  // start-up command timing out on a busy host would wedge every later queue call: the queue gets
  // its own client whose commands may take longer than the fail-fast request timeout.
  const queueRedis = redis.duplicate({ commandTimeout: 10_000 });
  queueRedis.on('error', () => undefined);
  const queue = createTrainingQueue(config, queueRedis);
  queue.on('error', () => undefined);
  const metrics = createMetrics(() => queue.getJobCounts('waiting', 'active', 'delayed', 'failed', 'completed'));
  const ctx = makeContext(config, redis, queue, deps.store ?? createDirStore(config.dataDir), metrics);
  const hub = new EventHub(ctx);
  app.decorate('cotune', ctx);

  for (const schema of componentSchemas) app.addSchema(schema);
  registerProblemHandlers(app);
  // Bodies are JSON or multipart only: a text/plain body is an unsupported media type (415), not a malformed object.
  app.removeContentTypeParser('text/plain');
  await app.register(multipart, { limits: { fileSize: Math.max(config.limits.datasetBytes, config.limits.modelBytes), files: 1000, parts: 1100, fields: 10 } });
  await registerSwagger(app, VERSION);

  app.addHook('onSend', async (request, reply) => {
    reply.header('x-request-id', request.id);
  });
  app.addHook('onResponse', async (request, reply) => {
    metrics.requests.observe({ method: request.method, route: request.routeOptions.url ?? 'unmatched', status: String(reply.statusCode) }, reply.elapsedTime / 1000);
  });
  if (config.apiKeys.length > 0) {
    const keys = new Set(config.apiKeys);
    app.addHook('onRequest', async (request) => {
      if (!request.url.startsWith('/v1/') || request.url.startsWith('/v1/health')) return;
      const auth = request.headers.authorization;
      const key = auth?.startsWith('Bearer ') ? auth.slice(7).trim() : request.headers['x-api-key'];
      if (typeof key !== 'string' || !keys.has(key)) throw new HttpProblem(401, 'unauthorized', 'a valid API key is required (Authorization: Bearer <key> or X-API-Key)');
    });
  }

  await app.register(datasetRoutes(ctx));
  await app.register(modelRoutes(ctx));
  await app.register(jobRoutes(ctx, hub));
  await app.register(healthRoutes(ctx));

  app.addHook('onReady', async () => {
    if (deps.skipEvictionCheck) return;
    const policy = await evictionPolicyWhenReachable(redis);
    if (policy !== 'noeviction') {
      throw new Error(`Redis maxmemory-policy is "${policy}"; BullMQ needs "noeviction" or queued jobs can be evicted. Refusing to start.`);
    }
  });
  app.addHook('preClose', async () => hub.closeAll());
  app.addHook('onClose', async () => {
    await queue.close().catch(() => undefined);
    await queueRedis.quit().catch(() => queueRedis.disconnect());
    await ctx.closeSubscriber();
    if (ownsRedis) await redis.quit().catch(() => redis.disconnect());
  });
  return app;
}
