import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { MOBILENET_DIR, FLOWERS_DIR } from '../helpers/shared-data.js';

const BIN = fileURLToPath(new URL('../../bin/cotune.js', import.meta.url));

function cotune(...args: string[]) {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr.trim() };
}

test('--help lists the commands and every hyperparameter flag', () => {
  const r = cotune('--help');
  assert.equal(r.code, 0);
  for (const word of ['cotune compare', 'cotune train', 'cotune relationship', '--lambda', '--lr-target-head', '--sampling-rate', '--freeze-below', '--threads']) {
    assert.ok(r.stdout.includes(word), `help lacks ${word}`);
  }
});

test('bad flags and unreadable inputs: one clear line, exit code 2', () => {
  const cases: [string[], RegExp][] = [
    [['compare', '--model', MOBILENET_DIR, '--data', FLOWERS_DIR, '--out', '/tmp/x', '--lambda', 'abc'], /--lambda expects a number/],
    [['compare', '--model', MOBILENET_DIR, '--data', FLOWERS_DIR, '--out', '/tmp/x', '--lambda=-3'], /hyperparameters\.lambda must be ≥ 0/],
    [['compare', '--model', MOBILENET_DIR, '--data', FLOWERS_DIR, '--out', '/tmp/x', '--bogus'], /Unknown option '--bogus'/],
    [['compare', '--model', '/nonexistent', '--data', FLOWERS_DIR, '--out', '/tmp/x'], /--model .*not readable/],
    [['compare', '--model', MOBILENET_DIR, '--data', '/nonexistent/data', '--out', '/tmp/x'], /--data \/nonexistent\/data: not readable/],
    [['train', '--method', 'magic', '--model', MOBILENET_DIR, '--data', FLOWERS_DIR, '--out', '/tmp/x'], /--method must be co-tuning or fine-tune/],
    [['compare', '--data', FLOWERS_DIR, '--out', '/tmp/x'], /--model is required/],
    [['launch'], /unknown command "launch"/],
    [['train', '--model', MOBILENET_DIR, '--data', FLOWERS_DIR, '--out', '/tmp/x'], /--method is required for train/],
    [['compare', '--model', MOBILENET_DIR, '--data', FLOWERS_DIR, '--out', '/tmp/x', '--batch-size', '-3'], /hyperparameters\.batchSize must be ≥ 1/],
    [['compare', '--model', `${MOBILENET_DIR}/model.json`, '--data', FLOWERS_DIR, '--out', '/tmp/x', '--lambda', '-3'], /hyperparameters\.lambda must be ≥ 0/],
    [['compare', '--model', MOBILENET_DIR, '--data', FLOWERS_DIR, '--out', '/etc/hostname'], /--out \/etc\/hostname: cannot create or write/],
    [['compare', '--model', MOBILENET_DIR, '--data', FLOWERS_DIR, '--out', '/tmp/x', '--backend', 'quantum'], /--backend must be one of/],
    [['compare', '--model', MOBILENET_DIR, '--data', FLOWERS_DIR, '--out', '/tmp/x', '--threads', '0'], /--threads expects an integer from 1 to 8/],
    [['compare', '--model', MOBILENET_DIR, '--data', FLOWERS_DIR, '--out', '/tmp/x', '--threads', '0x2'], /--threads expects an integer from 1 to 8/],
    [['compare', '--model', MOBILENET_DIR, '--data', FLOWERS_DIR, '--out', '/tmp/x', '--threads', '2 '], /--threads expects an integer from 1 to 8/],
    // Numbers as people write them: no hex, and seeds a job would accept too.
    [['compare', '--model', MOBILENET_DIR, '--data', FLOWERS_DIR, '--out', '/tmp/x', '--image-size', '0x20'], /--image-size expects a number/],
    [['compare', '--model', MOBILENET_DIR, '--data', FLOWERS_DIR, '--out', '/tmp/x', '--seed', '4294967296'], /--seed expects a whole number from 0 to 2147483647/],
  ];
  for (const [args, pattern] of cases) {
    const r = cotune(...args);
    assert.equal(r.code, 2, `${args.join(' ')} → exit ${r.code}: ${r.stderr}`);
    assert.equal(r.stderr.split('\n').length, 1, `more than one line: ${r.stderr}`);
    assert.match(r.stderr, pattern);
  }
});

test('a bad COTUNE_WASM_FMA or COTUNE_TF_BACKEND is named, exit code 2, on any backend, and no --out folder is left', () => {
  const out = `/tmp/cotune-cli-env-${process.pid}`;
  const run = (env: Record<string, string>, ...extra: string[]) =>
    spawnSync(process.execPath, [BIN, 'compare', '--model', MOBILENET_DIR, '--data', FLOWERS_DIR, '--out', out, ...extra], {
      encoding: 'utf8',
      timeout: 60_000,
      env: { ...process.env, ...env },
    });
  for (const [env, extra, pattern] of [
    [{ COTUNE_WASM_FMA: 'yes' }, ['--backend', 'cpu'], /^cotune: COTUNE_WASM_FMA must be 0, 1 or empty \(got "yes"\)$/],
    [{ COTUNE_TF_BACKEND: 'quantum' }, [], /^cotune: COTUNE_TF_BACKEND must be one of/],
  ] as [Record<string, string>, string[], RegExp][]) {
    const r = run(env, ...extra);
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr.trim(), pattern);
    assert.equal(existsSync(out), false, 'the --out folder was created');
  }
});

test('a freezeBelow layer that is not in the model fails before the data is read', () => {
  const out = `/tmp/cotune-cli-freeze-${process.pid}`;
  const r = cotune('train', '--method', 'co-tuning', '--model', MOBILENET_DIR, '--data', FLOWERS_DIR, '--out', out, '--image-size', '32', '--sampling-rate', '0.1', '--iterations', '1', '--freeze-below', 'conv_dw_99');
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /hyperparameters\.freezeBelow: no layer named "conv_dw_99"/);
  assert.doesNotMatch(r.stdout + r.stderr, /relationship/, 'the relationship was estimated first');
  assert.doesNotMatch(r.stdout + r.stderr, /data: \d+ classes|decoding/, 'the data was read first');
});
