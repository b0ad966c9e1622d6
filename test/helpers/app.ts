import { after } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { buildApp, type AppDeps } from '../../src/api/app.js';
import { loadConfig, type Config } from '../../src/config.js';
import { tempDir } from './fixtures.js';
import { testRedisUrl, uniquePrefix } from './redis.js';

export interface TestApp {
  app: FastifyInstance;
  config: Config;
}

/**
 * A real API against the test Redis, with its own queue prefix and data dir; closed after the
 * file. `env` overrides configuration variables.
 */
export async function buildTestApp(env: Record<string, string> = {}, deps: AppDeps = {}): Promise<TestApp> {
  const config = loadConfig({
    REDIS_URL: await testRedisUrl(),
    COTUNE_DATA_DIR: await tempDir('cotune-data-'),
    COTUNE_QUEUE_PREFIX: uniquePrefix(),
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'silent',
    ...env,
  });
  const app = await buildApp(config, deps);
  after(() => app.close());
  await app.ready();
  return { app, config };
}
