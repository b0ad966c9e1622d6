import assert from 'node:assert/strict';
import { test } from 'node:test';
import { buildApp } from '../../src/api/app.js';
import { loadConfig } from '../../src/config.js';
import { buildTestApp } from '../helpers/app.js';
import { tempDir } from '../helpers/fixtures.js';
import { privateRedis } from '../helpers/redis.js';

test('Redis stopped: the API answers 503 problem+json within 2 s, and recovers when Redis is back', async () => {
  const redis = await privateRedis();
  const { app } = await buildTestApp({ REDIS_URL: redis.url });
  assert.equal((await app.inject({ url: '/v1/jobs' })).statusCode, 200);

  await redis.stop({ keepDir: true });
  for (const req of [{ url: '/v1/jobs' }, { url: '/v1/health' }, { method: 'POST' as const, url: '/v1/jobs', payload: { datasetId: 'ds_x', modelId: 'mdl_x', method: 'co-tuning' } }]) {
    const started = performance.now();
    const res = await app.inject(req);
    const ms = performance.now() - started;
    assert.equal(res.statusCode, 503, `${req.url}: ${res.body}`);
    assert.ok(ms < 2000, `${req.url} answered in ${ms.toFixed(0)} ms`);
    assert.match(String(res.headers['content-type']), /^application\/problem\+json/);
    assert.equal(res.headers['retry-after'], '2');
    assert.equal(res.json().code, 'store_unavailable');
  }

  await redis.restart();
  const deadline = Date.now() + 10_000;
  let status = 0;
  while (Date.now() < deadline && status !== 200) {
    status = (await app.inject({ url: '/v1/health' })).statusCode;
    if (status !== 200) await new Promise((r) => setTimeout(r, 100));
  }
  assert.equal(status, 200, 'healthy again after Redis restarted');
  assert.equal((await app.inject({ url: '/v1/jobs' })).statusCode, 200);
});

test('the API refuses to start against a Redis whose maxmemory-policy would evict jobs', async () => {
  const redis = await privateRedis({ args: ['--maxmemory-policy', 'allkeys-lru'] });
  const config = loadConfig({ REDIS_URL: redis.url, COTUNE_DATA_DIR: await tempDir(), LOG_LEVEL: 'silent' });
  const app = await buildApp(config);
  await assert.rejects(async () => {
    await app.ready();
  }, /maxmemory-policy is "allkeys-lru"/);
  await app.close().catch(() => undefined);
});
