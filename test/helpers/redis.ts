import { after } from 'node:test';
import { startRedis, type LocalRedis, type StartRedisOptions } from '../../scripts/lib/redis-server.js';

export type { LocalRedis } from '../../scripts/lib/redis-server.js';
export { startRedis } from '../../scripts/lib/redis-server.js';

let shared: Promise<LocalRedis> | undefined;

/**
 * The Redis for this test file: REDIS_URL when set, otherwise one private redis-server per test
 * file, killed when the test process exits. Isolate tests with a unique queue prefix
 * (`uniquePrefix()`), not with separate servers.
 */
export async function testRedisUrl(): Promise<string> {
  if (process.env.REDIS_URL) return process.env.REDIS_URL;
  if (!shared) {
    shared = startRedis();
    // Not after(): called first inside a test, it would stop the server when that test ends.
    const started = await shared;
    process.on('exit', () => started.kill());
  }
  return (await shared).url;
}

/**
 * A redis-server owned by the caller (for stop/restart or non-default settings), stopped by
 * node:test's after(): at the end of the calling test, or of the file when called at top level.
 */
export async function privateRedis(options?: StartRedisOptions): Promise<LocalRedis> {
  const redis = await startRedis(options);
  after(() => redis.stop());
  return redis;
}

let counter = 0;
/** A queue/key prefix no other test uses (hash-tagged, as in production). */
export function uniquePrefix(name = 't'): string {
  counter += 1;
  return `{${name}-${process.pid}-${counter}-${Math.random().toString(36).slice(2, 8)}}`;
}
