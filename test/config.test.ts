import assert from 'node:assert/strict';
import { isAbsolute } from 'node:path';
import { test } from 'node:test';
import { ConfigError, loadConfig } from '../src/config.js';

test('defaults are applied and the config is frozen', () => {
  const config = loadConfig({});
  assert.equal(config.port, 3000);
  assert.equal(config.host, '127.0.0.1');
  assert.equal(config.queuePrefix, '{cotune}');
  assert.equal(config.tfBackend, undefined);
  assert.equal(config.wasmThreads, undefined);
  assert.deepEqual(config.apiKeys, []);
  assert.ok(isAbsolute(config.dataDir));
  assert.ok(Object.isFrozen(config) && Object.isFrozen(config.limits));
  assert.throws(() => {
    (config as { port: number }).port = 1;
  }, TypeError);
});

test('values are converted from strings and lists are split', () => {
  const config = loadConfig({ PORT: '8080', COTUNE_API_KEYS: ' a, b ,,', COTUNE_TF_BACKEND: 'wasm', COTUNE_WASM_THREADS: '2', COTUNE_MAX_DATASET_BYTES: '2048', REDIS_URL: 'redis://:secret@host:6380/1' });
  assert.equal(config.port, 8080);
  assert.equal(config.wasmThreads, 2);
  assert.deepEqual(config.apiKeys, ['a', 'b']);
  assert.equal(config.tfBackend, 'wasm');
  assert.equal(config.limits.datasetBytes, 2048);
  assert.equal(config.redisUrl, 'redis://:secret@host:6380/1');
});

test('bad values are rejected with a message naming each variable', () => {
  assert.throws(
    () => loadConfig({ PORT: 'eighty', REDIS_URL: 'http://localhost', COTUNE_TF_BACKEND: 'cuda', COTUNE_QUEUE_PREFIX: 'a:b' }),
    (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      const vars = err.problems.map((p) => p.variable).sort();
      assert.deepEqual(vars, ['COTUNE_QUEUE_PREFIX', 'COTUNE_TF_BACKEND', 'PORT', 'REDIS_URL']);
      assert.match(err.message, /PORT: .*"eighty"/);
      return true;
    },
  );
  assert.throws(() => loadConfig({ PORT: '70000' }), /PORT/);
  assert.throws(() => loadConfig({ COTUNE_JOB_ATTEMPTS: '0' }), /COTUNE_JOB_ATTEMPTS/);
  for (const threads of ['0', '9', 'two', '1.5', '0x2', '-1', '1e0']) assert.throws(() => loadConfig({ COTUNE_WASM_THREADS: threads }), /COTUNE_WASM_THREADS/);
  for (const fma of ['yes', 'off', '2']) assert.throws(() => loadConfig({ COTUNE_WASM_FMA: fma }), /COTUNE_WASM_FMA/);
  assert.throws(() => loadConfig({ PORT: '80.5' }), /PORT: must be a whole number written in digits \(got "80.5"\)/);
});

test('an unset, empty or blank optional variable takes the default', () => {
  for (const threads of [undefined, '', '  ']) assert.equal(loadConfig({ COTUNE_WASM_THREADS: threads }).wasmThreads, undefined);
  for (const fma of ['', '0', '1']) assert.doesNotThrow(() => loadConfig({ COTUNE_WASM_FMA: fma }));
  assert.equal(loadConfig({ COTUNE_WASM_THREADS: ' 2 ' }).wasmThreads, 2);
});

test('.env.example documents every variable the schema reads', async () => {
  const { readFile } = await import('node:fs/promises');
  const { EnvSchema } = await import('../src/config.js');
  const example = await readFile(new URL('../.env.example', import.meta.url), 'utf8');
  for (const key of Object.keys(EnvSchema.properties)) assert.match(example, new RegExp(`^#? ?${key}=`, 'm'), `${key} missing from .env.example`);
  // The example itself must be a valid configuration.
  const env = Object.fromEntries(example.split('\n').filter((l) => /^[A-Z_]+=/.test(l)).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
  assert.doesNotThrow(() => loadConfig(env));
});
