import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, test } from 'node:test';
import * as tar from 'tar';
import { UsageError, parseDemoArgs } from '../../src/demo/args.js';
import { parseCsvLine as splitCsvLine } from '../../src/cotuning/dataset.js';
import { packDataset } from '../../src/demo/pack.js';

const DEMO = fileURLToPath(new URL('../../scripts/demo.ts', import.meta.url));

describe('demo command line', () => {
  test('defaults and pass-through hyperparameters', () => {
    assert.deepEqual(parseDemoArgs([]), {
      help: false,
      model: undefined,
      data: undefined,
      classNames: undefined,
      out: 'demo-output',
      method: 'compare',
      seed: 0,
      hyperparameters: {},
      assetsDir: undefined,
    });
    const args = parseDemoArgs(
      [
        '--model',
        'm',
        '--data',
        'd.csv',
        '--image-size',
        '96',
        '--iterations',
        '50',
        '--batch-size',
        '8',
      ].concat(['--sampling-rate', '0.5', '--seed', '3', '--lambda', '0', '--method', 'co-tuning']),
    );
    assert.deepEqual(args.hyperparameters, {
      imageSize: 96,
      iterations: 50,
      batchSize: 8,
      samplingRate: 0.5,
      lambda: 0,
    });
    assert.equal(args.seed, 3);
    assert.equal(args.method, 'co-tuning');
  });

  test('bad flags are UsageErrors that name the flag', () => {
    const cases: [string[], RegExp][] = [
      [['--nope'], /--nope/],
      [['stray'], /stray/],
      [['--iterations', '1.5'], /--iterations must be an integer/],
      [['--batch-size', '0'], /--batch-size/],
      [['--image-size', 'big'], /--image-size/],
      [['--sampling-rate', '0'], /--sampling-rate must be a number in \(0, 1\]/],
      [['--sampling-rate', '1.2'], /--sampling-rate/],
      [['--lambda', '-1'], /--lambda/],
      [['--seed', '-4'], /--seed/],
      [['--method', 'fast'], /--method must be one of compare, co-tuning, fine-tune/],
      [['--class-names', 'x.json'], /--class-names only applies together with --model/],
      [['--model'], /--model/],
    ];
    for (const [argv, message] of cases) {
      assert.throws(
        () => parseDemoArgs(argv),
        (err: Error) => err instanceof UsageError && message.test(err.message),
        argv.join(' '),
      );
    }
  });

  test('the script exits with code 2 and one line on a bad flag, 0 on --help', () => {
    const bad = spawnSync(process.execPath, ['--import', 'tsx', DEMO, '--iterations', 'many'], {
      encoding: 'utf8',
    });
    assert.equal(bad.status, 2, bad.stderr);
    assert.equal(bad.stderr.trim().split('\n').length, 1, bad.stderr);
    assert.match(bad.stderr, /^demo: --iterations must be an integer/);
    const help = spawnSync(process.execPath, ['--import', 'tsx', DEMO, '--help'], { encoding: 'utf8' });
    assert.equal(help.status, 0, help.stderr);
    assert.match(help.stdout, /--sampling-rate/);
  });
});

describe('packing --data', () => {
  test('a CSV manifest is packed with exactly the images it names', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'cotune-demo-pack-'));
    try {
      const root = join(dir, 'birds');
      await mkdir(join(root, 'img', 'a'), { recursive: true });
      await writeFile(join(root, 'img', 'a', '1.png'), 'x');
      await writeFile(join(root, 'img', 'a', 'b, c.png'), 'x');
      await writeFile(join(root, 'unrelated.txt'), 'x');
      await writeFile(
        join(root, 'list.csv'),
        'path,label,split\nimg/a/1.png,a,train\n"img/a/b, c.png",a,test\n',
      );
      const archive = await packDataset(join(root, 'list.csv'), dir);
      const entries: string[] = [];
      await tar.list({ file: archive, onReadEntry: (e) => entries.push(e.path) });
      assert.deepEqual(entries.sort(), ['img/a/1.png', 'img/a/b, c.png', 'list.csv']);

      await writeFile(join(root, 'escape.csv'), 'path,label\n../outside.png,a\n');
      await assert.rejects(packDataset(join(root, 'escape.csv'), dir), /outside the manifest's folder/);
      await assert.rejects(packDataset(join(root, 'unrelated.txt'), dir), UsageError);
      await assert.rejects(packDataset(join(dir, 'missing'), dir), /does not exist/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('CSV cells honour quotes', () => {
    assert.deepEqual(splitCsvLine('"a, b",c,"say ""hi"""'), ['a, b', 'c', 'say "hi"']);
  });
});
