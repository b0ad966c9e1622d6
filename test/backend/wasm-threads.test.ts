/**
 * The WASM backend on 2 XNNPACK threads (src/cotuning/backend/wasm-threads.ts), started in this
 * file's own process: the thread count is real, our WAT kernels load into the shared memory and
 * run, gradients match the stock CPU kernels, and a process that started the threads exits on
 * its own. References are computed on 'cpu' first, before any fast gradient is registered.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { before, describe, it } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { getThreadsCount } from '@tensorflow/tfjs-backend-wasm';
import { selectBackend } from '../../src/cotuning/backend/select.js';
import { wasmKernels, type WasmKernels } from '../../src/cotuning/backend/wasm-kernels.js';
import { POOL_NICE } from '../../src/cotuning/backend/wasm-threads.js';
import { softCrossEntropy } from '../../src/cotuning/loss.js';
import { NesterovSgd } from '../../src/cotuning/optimizer.js';
import { rand, relError } from '../helpers/tensors.js';

const TOL = 1e-4;
const EXIT_FIXTURE = fileURLToPath(new URL('./fixtures/wasm-threads-exit.ts', import.meta.url));

const grads = (f: (...xs: tf.Tensor[]) => tf.Tensor, inputs: tf.Tensor[]): Float32Array[] =>
  tf.grads((...xs: tf.Tensor[]) => tf.sum(tf.mul(f(...xs), rand(f(...inputs).shape, 99))))(inputs).map((g) => g.dataSync() as Float32Array);

/** Big enough for XNNPACK to split the work between threads; each passes through our WAT kernels or XNNPACK. */
const cases: Record<string, () => Float32Array[]> = {
  'conv2d 3x3': () => tf.tidy(() => grads((x, w) => tf.conv2d(x as tf.Tensor4D, w as tf.Tensor4D, 1, 'same'), [rand([8, 24, 24, 16], 1), rand([3, 3, 16, 32], 2)])),
  'depthwise 3x3 stride 2': () => tf.tidy(() => grads((x, w) => tf.depthwiseConv2d(x as tf.Tensor4D, w as tf.Tensor4D, 2, 'same'), [rand([4, 24, 24, 32], 3), rand([3, 3, 32, 1], 4)])),
  // The output too: our x·W kernel computes it, and the gradients do not depend on it.
  'pointwise conv2d': () =>
    tf.tidy(() => {
      const [x, w] = [rand([4, 24, 24, 16], 13) as tf.Tensor4D, rand([1, 1, 16, 32], 14) as tf.Tensor4D];
      return [tf.conv2d(x, w, 1, 'same').dataSync() as Float32Array, ...grads((a, b) => tf.conv2d(a as tf.Tensor4D, b as tf.Tensor4D, 1, 'same'), [x, w])];
    }),
  // Few pixels and many channels: the filter gradient is cut by channels, not rows.
  'pointwise conv2d, 6x6 pixels, 64 channels': () => tf.tidy(() => grads((x, w) => tf.conv2d(x as tf.Tensor4D, w as tf.Tensor4D, 1, 'same'), [rand([4, 6, 6, 64], 21), rand([1, 1, 64, 64], 22)])),
  'maxPool 3x3 stride 2': () => tf.tidy(() => grads((x) => tf.maxPool(x as tf.Tensor4D, 3, 2, 'same'), [rand([4, 24, 24, 16], 15)])),
  'Nesterov SGD, 2 steps': () => {
    const vars = [tf.variable(rand([3, 3, 32, 1], 16)), tf.variable(rand([37], 17))];
    const optimizer = new NesterovSgd(0.9, 5e-4);
    for (let step = 0; step < 2; step++) {
      const g = new Map(vars.map((v, i) => [v, rand(v.shape, 20 + 2 * step + i)]));
      optimizer.apply(g, [{ variables: vars, lr: 0.1 }]);
      tf.dispose([...g.values()]);
    }
    const out = [...vars, ...optimizer.state(vars).map((v) => v as tf.Variable)].map((t) => t.dataSync().slice() as Float32Array);
    optimizer.dispose();
    tf.dispose(vars);
    return out;
  },
  'matMul 256x128x192': () => tf.tidy(() => grads((a, b) => tf.matMul(a, b), [rand([256, 128], 5), rand([128, 192], 6)])),
  // A head's shapes: its input gradient dz·Wᵀ and weight gradient fᵀ·dz go to our kernels untransposed.
  // A head's loss and bias: the soft cross-entropy in one kernel (in JS for a class count that is
  // not a multiple of 4), the bias gradient a sum over rows.
  'soft cross-entropy, 32x1000 with bias, and 32x10': () =>
    tf.tidy(() =>
      grads(
        (z, bias) =>
          tf.add(
            softCrossEntropy(tf.add(z, bias) as tf.Tensor2D, tf.softmax(rand([32, 1000], 25)) as tf.Tensor2D),
            softCrossEntropy(tf.slice(z, [0, 0], [32, 10]) as tf.Tensor2D, tf.softmax(rand([32, 10], 28)) as tf.Tensor2D),
          ),
        [tf.mul(rand([32, 1000], 26), 4), rand([1000], 27)],
      ),
    ),
  'matMul 32x256x1000 (a head)': () => tf.tidy(() => grads((a, b) => tf.matMul(a, b), [rand([32, 256], 23), rand([256, 1000], 24)])),
  // 24 channels take the narrow per-channel sums (totals in registers), 40 the wide ones.
  ...Object.fromEntries(
    [24, 40].map((c, i) => [
      `batchnorm layer training, ${c} channels`,
      () =>
        tf.tidy(() => {
          const layer = tf.layers.batchNormalization({ epsilon: 1e-3 });
          layer.build([8, 24, 24, c]);
          layer.setWeights([rand([c], 7 + 40 * i), rand([c], 8 + 40 * i), rand([c], 9 + 40 * i), tf.add(rand([c], 10 + 40 * i), 2)]);
          return grads((x) => layer.apply(x, { training: true }) as tf.Tensor, [tf.mul(rand([8, 24, 24, c], 11 + 40 * i), 3)]);
        }),
    ]),
  ),
  'relu6 activation': () =>
    tf.tidy(() => {
      const layer = tf.layers.activation({ activation: 'relu6' });
      return grads((x) => layer.apply(x) as tf.Tensor, [tf.mul(rand([8, 12, 12, 24], 12), 8)]);
    }),
};

const references = new Map<string, Float32Array[]>();

describe('wasm backend on 2 threads', () => {
  before(async () => {
    assert.ok(await tf.setBackend('cpu'));
    for (const [name, run] of Object.entries(cases)) references.set(name, run());
  });

  it('runs 2 XNNPACK threads with our WAT kernels on its shared memory', async () => {
    const info = await selectBackend({ preferred: 'wasm', wasmThreads: 2 });
    assert.equal(info.tfBackend, 'wasm');
    assert.equal(getThreadsCount(), 2);
    assert.equal(info.threads, 2);
    assert.ok(wasmKernels(tf.backend()), 'our WAT kernels did not load');
  });

  // Only where there is something to lower: a test run started above POOL_NICE keeps its nice.
  const startNice = os.getPriority();
  it(`lowers the priority of the pool threads only (nice ${POOL_NICE}), on Linux`, { skip: process.platform !== 'linux' || startNice >= POOL_NICE }, () => {
    // Field 19 of /proc/<tid>/stat is the nice value; the command name before it is in parentheses.
    const niceOf = (tid: string): number => Number(readFileSync(`/proc/self/task/${tid}/stat`, 'utf8').split(') ')[1].split(' ')[16]);
    const nices = readdirSync('/proc/self/task').map((tid) => ({ tid: Number(tid), nice: niceOf(tid) }));
    assert.equal(nices.find((t) => t.tid === process.pid)?.nice, startNice, 'the main thread was reniced');
    assert.ok(nices.some((t) => t.nice === POOL_NICE), `no thread at nice ${POOL_NICE}: ${JSON.stringify(nices)}`);
    assert.ok(nices.filter((t) => t.nice === startNice).length > 1, 'threads other than the pool were reniced');
  });

  it(`gradients match the stock CPU kernels (rel. error ≤ ${TOL}), through our WAT kernels`, (t) => {
    // Count the calls of each WAT kernel: a silent fallback to the composite versions must fail.
    const own = wasmKernels(tf.backend()) as WasmKernels;
    const calls = new Map<string, number>();
    const kernelNames = (Object.keys(own) as (keyof WasmKernels)[]).filter((name) => name !== 'threadUse' && name !== 'fusedMultiplyAdd');
    for (const name of kernelNames) {
      const kernel = own[name] as (...args: unknown[]) => tf.TensorInfo;
      (own as unknown as Record<string, unknown>)[name] = (...args: unknown[]) => {
        calls.set(name, (calls.get(name) ?? 0) + 1);
        return kernel(...args);
      };
    }
    let worst = 0;
    for (const [name, run] of Object.entries(cases)) {
      const got = run();
      const want = references.get(name) as Float32Array[];
      assert.equal(got.length, want.length, name);
      got.forEach((g, i) => {
        const e = relError(g, want[i]);
        worst = Math.max(worst, e);
        assert.ok(e <= TOL, `${name} gradient ${i}: relative error ${e.toExponential(2)}`);
      });
    }
    for (const name of kernelNames) assert.ok(calls.get(name), `WAT kernel ${name} never ran`);
    // Every case is big enough to be cut into chunks, and the helper thread must have run some.
    const use = own.threadUse();
    assert.equal(use.threads, 2);
    // matMulTransposedA is cut by rows (pointwise conv2d) and by channels (6x6 pixels); matMul by rows.
    for (const name of ['matMul', 'matMulTransposedA', 'matMulTransposedA by channels', 'matMulTransposedB', 'convFilterGrad', 'depthwiseFilterGrad', 'depthwiseInputGrad', 'maxPoolGrad', 'relu6Grad', 'channelSums', 'channelSumsNarrow', 'channelAffine2']) {
      assert.ok(use.chunkedCalls[name], `${name} never ran in chunks on 2 threads: ${JSON.stringify(use.chunkedCalls)}`);
    }
    assert.ok(use.helperChunks > 0, 'the helper thread ran no chunk');
    t.diagnostic(`worst relative error ${worst.toExponential(2)}; WAT kernel calls ${JSON.stringify(Object.fromEntries(calls))}; in chunks ${JSON.stringify(use)}`);
  });

  it('a process that started 2 threads exits on its own', () => {
    const r = spawnSync(process.execPath, ['--import', import.meta.resolve('tsx'), EXIT_FIXTURE], { encoding: 'utf8', timeout: 120_000 });
    assert.equal(r.signal, null, `killed after 120 s: the pthread workers keep the process alive\n${r.stderr}`);
    assert.equal(r.status, 0, r.stderr);
    assert.doesNotMatch(r.stderr, /WASM threads unavailable/);
    assert.deepEqual(JSON.parse(r.stdout.trim().split('\n').pop() as string), { threads: 2, kernels: true, finite: true });
  });
});
