import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { buildApp } from '../src/api/app.js';
import { loadConfig } from '../src/config.js';
import { stableJson } from './stable-json.js';

/**
 * The OpenAPI document exactly as the API serves it at /openapi.json, rendered as stable JSON.
 * The app is built with default configuration and never listens; a lazy Redis client that is
 * never asked to connect keeps the export independent of a running Redis.
 */
export async function renderDocument(): Promise<string> {
  const dataDir = await mkdtemp(join(tmpdir(), 'cotune-openapi-'));
  const config = loadConfig({ COTUNE_DATA_DIR: dataDir });
  const redis = new Redis(config.redisUrl, { lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 0, retryStrategy: () => null });
  redis.on('error', () => undefined);
  const app = await buildApp(config, { redis, logger: false, skipEvictionCheck: true });
  try {
    await app.ready();
    return stableJson(app.swagger());
  } finally {
    await app.close();
    redis.disconnect();
    await rm(dataDir, { recursive: true, force: true });
  }
}
