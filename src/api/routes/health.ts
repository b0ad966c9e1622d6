import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { ref } from '../../contracts/common.js';
import { Health } from '../../contracts/health.js';
import { liveWorkers } from '../../queue/records.js';
import type { ApiContext } from '../context.js';
import { json, openProblems } from './common.js';

export function healthRoutes(ctx: ApiContext): FastifyPluginAsyncTypebox {
  return async (app) => {
    app.get(
      '/v1/health',
      {
        schema: {
          operationId: 'getHealth',
          summary: 'Service health',
          description: 'Redis reachability, queue depth, and the workers seen in the last 30 s with their TF.js backend. 503 (problem+json) when Redis is unreachable.',
          tags: ['health'],
          security: [],
          response: { 200: json(ref(Health), 'Healthy (or degraded: no worker seen).'), ...openProblems() },
        },
      },
      async () => {
        const started = performance.now();
        await ctx.redis.ping();
        const latencyMs = Math.round((performance.now() - started) * 100) / 100;
        const [counts, workers] = await Promise.all([ctx.queue.getJobCounts('waiting', 'active', 'delayed', 'failed', 'completed', 'prioritized'), liveWorkers(ctx.redis, ctx.config.queuePrefix)]);
        return {
          status: workers.length > 0 ? ('ok' as const) : ('degraded' as const),
          redis: { ok: true, latencyMs },
          queue: { waiting: (counts.waiting ?? 0) + (counts.prioritized ?? 0), active: counts.active ?? 0, delayed: counts.delayed ?? 0, failed: counts.failed ?? 0, completed: counts.completed ?? 0 },
          workers,
        };
      },
    );

    app.get(
      '/metrics',
      {
        schema: {
          operationId: 'getMetrics',
          summary: 'Prometheus metrics',
          tags: ['health'],
          security: [],
          response: { 200: Type.Unsafe({ description: 'Prometheus text exposition format.', content: { 'text/plain': { schema: { type: 'string' } } } }) },
        },
      },
      async (_request, reply) => {
        reply.type(ctx.metrics.registry.contentType);
        return ctx.metrics.registry.metrics();
      },
    );
  };
}
