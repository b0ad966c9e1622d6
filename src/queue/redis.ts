import { Redis, type RedisOptions } from 'ioredis';

/**
 * API-side connection: fail fast when Redis is down (no offline queue, one retry, short
 * timeouts) so requests get a 503 instead of hanging, and reconnect in the background.
 */
export function createApiRedis(url: string, options: RedisOptions = {}): Redis {
  return new Redis(url, {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    connectTimeout: 1500,
    commandTimeout: 1500,
    retryStrategy: (times) => Math.min(100 * times, 1000),
    ...options,
  });
}

/** Worker-side connection: wait for Redis rather than fail (BullMQ requires maxRetriesPerRequest null). */
export function createWorkerRedis(url: string, options: RedisOptions = {}): Redis {
  return new Redis(url, {
    maxRetriesPerRequest: null,
    retryStrategy: (times) => Math.min(200 * times, 2000),
    ...options,
  });
}

/** Errors that mean "Redis is unreachable right now" (mapped to 503 by the API). */
export function isRedisUnavailable(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  const message = err.message;
  return (
    err.name === 'MaxRetriesPerRequestError' ||
    /Stream isn't writeable|enableOfflineQueue|Connection is closed|ECONNREFUSED|ECONNRESET|ETIMEDOUT|Command timed out|connect ETIMEDOUT|Redis connection lost/i.test(message)
  );
}

/** The Redis eviction policy; BullMQ loses jobs under anything but noeviction. */
export async function evictionPolicy(redis: Redis): Promise<string> {
  const info = await redis.info('memory');
  const match = /^maxmemory_policy:(\S+)/m.exec(info);
  return match ? match[1] : 'unknown';
}

/**
 * evictionPolicy(), retried while Redis is unreachable or slow to answer: at start-up Redis may
 * still be loading its AOF (compose starts services together) or the host may be busy.
 */
export async function evictionPolicyWhenReachable(redis: Redis, timeoutMs = 30_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await evictionPolicy(redis);
    } catch (err) {
      if (!isRedisUnavailable(err) || Date.now() >= deadline) throw err;
      await new Promise((r) => setTimeout(r, 500));
    }
  }
}
