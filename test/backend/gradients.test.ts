/**
 * The fast gradient kernels against the CPU backend's stock kernels.
 *
 * TF.js has one active backend at a time and registered gradients are global, so every
 * reference is computed first, on 'cpu' with nothing of ours registered; then the fast kernels
 * are registered and the same computations run on 'wasm' (and on 'cpu' with the fast kernels).
 */
import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { registerFastGradients } from '../../src/cotuning/backend/gradients.js';
import { wasmKernels } from '../../src/cotuning/backend/wasm-kernels.js';
import { crossEntropy, softCrossEntropy } from '../../src/cotuning/loss.js';
import { loadLayersModel } from '../../src/cotuning/model-io.js';
import { buildNet, disposeNet, trainableGroups } from '../../src/cotuning/network.js';
import { NesterovSgd } from '../../src/cotuning/optimizer.js';
import { trainStep } from '../../src/cotuning/train.js';
import { MOBILENET_DIR } from '../helpers/shared-data.js';
import { rand, relError } from '../helpers/tensors.js';

const TOL = 1e-4;

interface Case {
  name: string;
  /** Returns every output of the computation as flat arrays. */
  run: () => Float32Array[];
  /** The reference computation on stock CPU kernels, when it differs from `run`. */
  reference?: () => Float32Array[];
}

const cases: Case[] = [];
const run = (kernel: string, inputs: tf.NamedTensorMap, attrs: object): Float32Array =>
  tf.tidy(() => tf.engine().runKernel(kernel, inputs, attrs as tf.NamedAttrMap) as tf.Tensor).dataSync() as Float32Array;

// Regular convolutions: shapes × kernel sizes × strides × paddings, including a numeric pad.
let seed = 1;
for (const h of [7, 8, 13]) {
  for (const k of [1, 3, 5]) {
    for (const stride of [1, 2]) {
      for (const pad of ['same', 'valid', 1] as const) {
        if (pad === 'valid' && k > h) continue;
        const [n, ci, co] = [2, 3, 4];
        const s = seed++;
        cases.push({
          name: `conv2d h${h} k${k} s${stride} ${pad}`,
          run: () =>
            tf.tidy(() => {
              const x = rand([n, h, h + 1, ci], s) as tf.Tensor4D;
              const w = rand([k, k, ci, co], s + 1000) as tf.Tensor4D;
              const y = tf.conv2d(x, w, stride, pad);
              const dy = rand(y.shape, s + 2000);
              const attrs = { strides: [stride, stride], pad, dataFormat: 'NHWC' };
              return [
                run('Conv2DBackpropInput', { dy, filter: w }, { ...attrs, inputShape: x.shape }),
                run('Conv2DBackpropFilter', { x, dy }, { ...attrs, filterShape: w.shape }),
              ];
            }),
        });
      }
    }
  }
}

// Output channels a multiple of 8 (our WASM filter-gradient kernel): input channels that are
// and are not multiples of 4, strided 1x1 filters, dilations, and more output pixels than one
// of its blocks (MobileNet's first layer: 3x3, stride 2, 3 → 8 channels).
for (const [xShape, k, stride, pad, dilation, co] of [
  [[2, 9, 8, 3], 3, 1, 'same', 1, 8],
  [[2, 9, 8, 3], 3, 2, 'same', 1, 8],
  [[2, 10, 9, 5], 5, 2, 'valid', 1, 16],
  [[2, 9, 9, 4], 3, 1, 1, 1, 8],
  [[3, 8, 7, 8], 1, 2, 'same', 1, 8],
  [[2, 11, 10, 3], 3, 1, 'same', 2, 8],
  [[2, 11, 10, 6], 3, 1, 'valid', 3, 16],
  [[4, 48, 48, 3], 3, 2, 'same', 1, 8],
  [[2, 13, 13, 12], 3, 2, 'valid', 1, 24],
] as [number[], number, number, 'same' | 'valid' | number, number, number][]) {
  const s = seed++;
  cases.push({
    name: `conv2d ${xShape.join('x')} k${k} s${stride} ${pad} d${dilation} → ${co}`,
    run: () =>
      tf.tidy(() => {
        const x = rand(xShape, s) as tf.Tensor4D;
        const w = rand([k, k, xShape[3], co], s + 1000) as tf.Tensor4D;
        const dilations = [dilation, dilation];
        const dy = rand(tf.conv2d(x, w, stride, pad as 'same', 'NHWC', dilation).shape, s + 2000);
        const attrs = { strides: [stride, stride], pad, dataFormat: 'NHWC', dilations };
        return [run('Conv2DBackpropFilter', { x, dy }, { ...attrs, filterShape: w.shape })];
      }),
    // The stock CPU kernel ignores dilations: compare with the dense filter it equals.
    reference:
      dilation === 1
        ? undefined
        : () =>
            tf.tidy(() => {
              const x = rand(xShape, s) as tf.Tensor4D;
              const w = rand([k, k, xShape[3], co], s + 1000) as tf.Tensor4D;
              const wd = dilateFilter(w, dilation);
              const dy = rand(tf.conv2d(x, wd, stride, pad as 'same').shape, s + 2000);
              const attrs = { strides: [stride, stride], pad, dataFormat: 'NHWC' };
              return [undilate(run('Conv2DBackpropFilter', { x, dy }, { ...attrs, filterShape: wd.shape }), w.shape, dilation)];
            }),
  });
}

// Pointwise convolutions with channel counts our WASM kernels take (filter gradient: ci % 4,
// co % 8; forward x·W: co % 8, input gradient dy·Wᵀ: ci % 8), including more rows than one of
// their blocks, pixel counts that are not multiples of 4, channel counts that are not powers of
// two, and ones they leave to XNNPACK (ci = 3, co = 12, a 512x1024 filter: more than L2 holds).
for (const [xShape, co] of [
  [[2, 7, 9, 8], 16],
  [[3, 5, 5, 12], 24],
  [[2, 40, 40, 8], 16],
  [[1, 6, 6, 256], 256],
  [[1, 3, 5, 3], 8],
  [[2, 3, 3, 16], 12],
  [[1, 2, 3, 512], 1024],
] as [number[], number][]) {
  const s = seed++;
  cases.push({
    name: `pointwise conv2d ${xShape.join('x')} → ${co}`,
    run: () =>
      tf.tidy(() => {
        const x = rand(xShape, s) as tf.Tensor4D;
        const w = rand([1, 1, xShape[3], co], s + 1000) as tf.Tensor4D;
        const y = tf.conv2d(x, w, 1, 'same');
        const dy = rand(y.shape, s + 2000);
        const attrs = { strides: [1, 1], pad: 'same', dataFormat: 'NHWC' };
        return [
          y.dataSync() as Float32Array,
          run('Conv2DBackpropInput', { dy, filter: w }, { ...attrs, inputShape: x.shape }),
          run('Conv2DBackpropFilter', { x, dy }, { ...attrs, filterShape: w.shape }),
        ];
      }),
  });
}

// Depthwise convolutions, with channel multipliers 1 and 2.
for (const h of [7, 8, 12]) {
  for (const k of [3, 5]) {
    for (const stride of [1, 2]) {
      for (const pad of ['same', 'valid'] as const) {
        for (const mult of [1, 2]) {
          const [n, c] = [2, 5];
          const s = seed++;
          cases.push({
            name: `depthwise h${h} k${k} s${stride} ${pad} m${mult}`,
            run: () =>
              tf.tidy(() => {
                const x = rand([n, h, h, c], s) as tf.Tensor4D;
                const w = rand([k, k, c, mult], s + 1000) as tf.Tensor4D;
                const y = tf.depthwiseConv2d(x, w, stride, pad);
                const dy = rand(y.shape, s + 2000);
                const attrs = { strides: [stride, stride], pad, dilations: [1, 1] };
                return [
                  run('DepthwiseConv2dNativeBackpropInput', { dy, filter: w }, { ...attrs, inputShape: x.shape }),
                  run('DepthwiseConv2dNativeBackpropFilter', { x, dy }, { ...attrs, filterShape: w.shape }),
                ];
              }),
          });
        }
      }
    }
  }
}

// More than 16 channels: the depthwise filter gradient switches from a dense conv to a grouped one.
for (const stride of [1, 2]) {
  for (const pad of ['same', 'valid'] as const) {
    const s = seed++;
    cases.push({
      name: `depthwise 24 channels s${stride} ${pad}`,
      run: () =>
        tf.tidy(() => {
          const x = rand([2, 9, 8, 24], s) as tf.Tensor4D;
          const w = rand([3, 3, 24, 1], s + 1000) as tf.Tensor4D;
          const dy = rand(tf.depthwiseConv2d(x, w, stride, pad).shape, s + 2000);
          const attrs = { strides: [stride, stride], pad, dilations: [1, 1] };
          return [
            run('DepthwiseConv2dNativeBackpropInput', { dy, filter: w }, { ...attrs, inputShape: x.shape }),
            run('DepthwiseConv2dNativeBackpropFilter', { x, dy }, { ...attrs, filterShape: w.shape }),
          ];
        }),
    });
  }
}

// Channels in fours with a 3x3 filter: our WASM kernel's register path, for rows and columns
// with and without padded taps, including inputs too small to have any pixel without them.
for (const [xShape, stride, pad] of [
  [[2, 9, 10, 8], 1, 'same'],
  [[2, 9, 10, 8], 2, 'same'],
  [[2, 10, 9, 16], 2, 'valid'],
  [[3, 7, 7, 12], 2, 2],
  [[2, 2, 2, 8], 1, 'same'],
  [[2, 3, 3, 4], 2, 'same'],
] as [number[], number, 'same' | 'valid' | number][]) {
  const s = seed++;
  cases.push({
    name: `depthwise 3x3 ${xShape.join('x')} s${stride} ${pad}`,
    run: () =>
      tf.tidy(() => {
        const x = rand(xShape, s) as tf.Tensor4D;
        const w = rand([3, 3, xShape[3], 1], s + 1000) as tf.Tensor4D;
        const dy = rand(tf.depthwiseConv2d(x, w, stride, pad as 'same').shape, s + 2000);
        const attrs = { strides: [stride, stride], pad, dilations: [1, 1] };
        return [run('DepthwiseConv2dNativeBackpropFilter', { x, dy }, { ...attrs, filterShape: w.shape })];
      }),
  });
}

/** Gradients of Σ(f(x, w) · r) with respect to x and w, through the registered gradients. */
function convGrads(f: (x: tf.Tensor4D, w: tf.Tensor4D) => tf.Tensor, xs: number[], ws: number[], s: number): Float32Array[] {
  return tf.tidy(() => {
    const x = rand(xs, s) as tf.Tensor4D;
    const w = rand(ws, s + 1) as tf.Tensor4D;
    const r = rand(f(x, w).shape, s + 2);
    const g = tf.grads((a, b) => tf.sum(tf.mul(f(a as tf.Tensor4D, b as tf.Tensor4D), r)));
    return g([x, w]).map((t) => t.dataSync() as Float32Array);
  });
}

/** A dilated filter as the equivalent dense filter with zeros between the taps. */
function dilateFilter(w: tf.Tensor4D, d: number): tf.Tensor4D {
  const [kh, kw, a, b] = w.shape;
  const buf = tf.buffer([(kh - 1) * d + 1, (kw - 1) * d + 1, a, b]);
  const v = w.arraySync();
  for (let i = 0; i < kh; i++) for (let j = 0; j < kw; j++) for (let p = 0; p < a; p++) for (let q = 0; q < b; q++) buf.set(v[i][j][p][q], i * d, j * d, p, q);
  return buf.toTensor() as tf.Tensor4D;
}

/** Take the taps of a dense filter gradient that correspond to a dilated filter. */
function undilate(g: Float32Array, shape: number[], d: number): Float32Array {
  const [kh, kw, a, b] = shape;
  const kwd = (kw - 1) * d + 1;
  const out = new Float32Array(kh * kw * a * b);
  for (let i = 0; i < kh; i++)
    for (let j = 0; j < kw; j++)
      for (let p = 0; p < a * b; p++) out[(i * kw + j) * a * b + p] = g[(i * d * kwd + j * d) * a * b + p];
  return out;
}

// Dilated convolutions: tfjs-core rejects their gradients; the reference is the equivalent dense conv.
for (const d of [2, 3]) {
  for (const pad of ['same', 'valid'] as const) {
    const s = seed++;
    const wShape = [3, 3, 3, 2];
    cases.push({
      name: `conv2d dilation ${d} ${pad}`,
      run: () => convGrads((x, w) => tf.conv2d(x, w, 1, pad, 'NHWC', d), [2, 11, 10, 3], wShape, s),
      reference: () => dilatedRef(false, d, pad, s),
    });
    cases.push({
      name: `depthwise dilation ${d} ${pad}`,
      run: () => convGrads((x, w) => tf.depthwiseConv2d(x, w, 1, pad, 'NHWC', d), [2, 11, 10, 3], [3, 3, 3, 1], s),
      reference: () => dilatedRef(true, d, pad, s),
    });
    cases.push({
      name: `depthwise dilation ${d} ${pad}, 8 channels`,
      run: () => convGrads((x, w) => tf.depthwiseConv2d(x, w, 1, pad, 'NHWC', d), [2, 11, 10, 8], [3, 3, 8, 1], s),
      reference: () => dilatedRef(true, d, pad, s, 8),
    });
  }
}
// Batch norm as tf.layers runs it in training mode, and ReLU6 as Activation('relu6').
for (const [shape, s, centre = 0.5, spread = 3, firstPixel] of [
  [[4, 6, 5, 3], 500],
  [[8, 3, 3, 16], 501],
  [[3, 1, 2, 7], 502],
  // More pixels than one block of the WASM channel sums (256), with and without a channel tail.
  [[4, 12, 11, 20], 503],
  [[2, 20, 17, 6], 504],
  // An odd number of pixels: the narrow channel sums take pixels in pairs, then the last alone.
  [[3, 5, 7, 12], 507],
  // A mean 160 times the spread: one-pass batch statistics must not cancel the variance away
  // (E[x²] − E[x]² in float32 would be off by about 1e-3 here).
  [[4, 12, 11, 20], 505, 8, 0.05],
  // An outlier in the first pixel: the shift of the one-pass statistics must not be taken from it alone.
  [[4, 12, 11, 20], 506, 0.5, 3, 1000],
] as [number[], number, number?, number?, number?][]) {
  cases.push({
    name: `batchnorm layer training ${shape.join('x')} around ${centre}${firstPixel ? `, first pixel ${firstPixel}` : ''}`,
    run: () =>
      tf.tidy(() => {
        const layer = tf.layers.batchNormalization({ epsilon: 1e-3, momentum: 0.9 });
        layer.build(shape);
        layer.setWeights([rand([shape[3]], s), rand([shape[3]], s + 1), rand([shape[3]], s + 2), tf.add(rand([shape[3]], s + 3), 2)]);
        const [n, h, w, c] = shape;
        const base = tf.add(tf.mul(rand(shape, s + 4), spread), centre);
        const x = firstPixel ? tf.add(base, tf.pad(tf.fill([1, 1, 1, c], firstPixel), [[0, n - 1], [0, h - 1], [0, w - 1], [0, 0]])) : base;
        const r = rand(shape, s + 5);
        const f = (a: tf.Tensor): tf.Scalar => tf.sum(tf.mul(layer.apply(a, { training: true }) as tf.Tensor, r));
        const vars = layer.trainableWeights.map((w) => w.read() as tf.Variable);
        const { grads } = tf.variableGrads(() => f(x), vars);
        const dx = tf.grad(f)(x);
        const y = layer.apply(x, { training: true }) as tf.Tensor;
        const moving = layer.getWeights().slice(2);
        return [y, dx, grads[vars[0].name], grads[vars[1].name], ...moving].map((t) => t.dataSync() as Float32Array);
      }),
  });
}
cases.push({
  name: 'relu6 activation',
  run: () =>
    tf.tidy(() => {
      const layer = tf.layers.activation({ activation: 'relu6' });
      // Include values at exactly 0 and 6, where the gradient's mask has its edges.
      const x = tf.concat([tf.mul(rand([4, 5, 5, 6], 600), 8), tf.tensor([0, 6, -0, 5.999999523, 6.000000477, -1e-30], [1, 1, 1, 6]).tile([1, 5, 5, 1])]);
      const r = rand(x.shape, 601);
      const f = (a: tf.Tensor): tf.Scalar => tf.sum(tf.mul(layer.apply(a) as tf.Tensor, r));
      return [layer.apply(x) as tf.Tensor, tf.grad(f)(x)].map((t) => t.dataSync() as Float32Array);
    }),
});
// Inference mode: moving statistics, as tf.layers runs frozen layers, evaluation and the relationship pass.
for (const [shape, s] of [
  [[4, 6, 5, 3], 510],
  [[2, 3, 3, 16], 511],
  [[5, 7], 512],
] as [number[], number][]) {
  cases.push({
    name: `batchnorm inference ${shape.join('x')}`,
    run: () =>
      tf.tidy(() => {
        const c = shape[shape.length - 1];
        const x = tf.add(tf.mul(rand(shape, s), 3), 0.5);
        const [m, v, o, sc] = [rand([c], s + 1), tf.add(rand([c], s + 2), 1.5), rand([c], s + 3), rand([c], s + 4)];
        return [tf.batchNorm(x, m, v, o, sc, 1e-3), tf.batchNorm(x, m, v, undefined, undefined, 1e-3)].map((t) => t.dataSync() as Float32Array);
      }),
  });
}
cases.push({
  name: 'tf.batchNorm gradient (FusedBatchNorm)',
  run: () =>
    tf.tidy(() => {
      const x = rand([3, 4, 5, 6], 700);
      const [m, v, o, sc] = [rand([6], 701), tf.add(rand([6], 702), 1.5), rand([6], 703), rand([6], 704)];
      const r = rand(x.shape, 705);
      const g = tf.grads((a, b, c, d, e) => tf.sum(tf.mul(tf.batchNorm(a, b, c, d, e, 1e-3), r)));
      return g([x, m, v, o, sc]).map((t) => t.dataSync() as Float32Array);
    }),
});
// matMul and its gradients: every transpose combination, shaped so both operand orders get
// used, few-row products that our WASM kernel takes (rows in fours, columns in eights), and
// a 100-class head's, which it does not.
for (const [m, k, n] of [
  [4, 64, 300],
  [300, 64, 4],
  [5, 7, 3],
  [32, 256, 1000],
  [32, 256, 100],
  [8, 21, 16],
  [64, 12, 40],
]) {
  for (const ta of [false, true]) {
    for (const tb of [false, true]) {
      const s = seed++;
      cases.push({
        name: `matMul ${m}x${k}x${n} ta=${ta} tb=${tb}`,
        run: () =>
          tf.tidy(() => {
            const a = rand(ta ? [k, m] : [m, k], s);
            const b = rand(tb ? [n, k] : [k, n], s + 1);
            const r = rand([m, n], s + 2);
            const g = tf.grads((x, y) => tf.sum(tf.mul(tf.matMul(x, y, ta, tb), r)));
            return [tf.matMul(a, b, ta, tb), ...g([a, b])].map((t) => t.dataSync() as Float32Array);
          }),
      });
    }
  }
}
// A b of higher rank than a broadcasts a's missing leading dimensions into the output's shape.
cases.push({
  name: 'matMul 8x16 by 1x16x8 (shape)',
  run: () =>
    tf.tidy(() => {
      const y = tf.matMul(rand([8, 16], 970), rand([1, 16, 8], 971));
      return [y.dataSync() as Float32Array, Float32Array.from(y.shape)];
    }),
});
// Sums over every axis but the last (a bias's gradient): our channel sums on WASM, any axis order.
cases.push({
  name: 'sum over leading axes',
  run: () =>
    tf.tidy(() => {
      const [a, b, c] = [rand([37, 1000], 980), rand([2, 3, 300, 6], 981), rand([3, 7, 13, 8], 982)];
      return [tf.sum(a, 0), tf.sum(a, [0], true), tf.sum(b, [2, 0, 1]), tf.sum(b, [-2, -3, -4], true), tf.sum(b, [0, 1]), tf.sum(c, [0, 1, 2])].flatMap((t) => [
        t.dataSync() as Float32Array,
        Float32Array.from(t.shape),
      ]);
    }),
});
cases.push({
  name: 'tf.relu6 gradient',
  run: () =>
    tf.tidy(() => {
      const x = tf.concat([tf.mul(rand([50], 800), 8), tf.tensor([0, 6, 5.999999523, 6.000000477])]);
      return [tf.grad((a: tf.Tensor) => tf.sum(tf.mul(tf.relu6(a), tf.range(0, 54))))(x).dataSync() as Float32Array];
    }),
});

/** Gradient of Σ(f(x) · r) with respect to x, through the registered gradients. */
function inputGrad(f: (x: tf.Tensor4D) => tf.Tensor, shape: number[], s: number): Float32Array[] {
  return tf.tidy(() => {
    const x = rand(shape, s) as tf.Tensor4D;
    const r = rand(f(x).shape, s + 1);
    const g = tf.grad((a: tf.Tensor) => tf.sum(tf.mul(f(a as tf.Tensor4D), r)))(x);
    return [f(x).dataSync() as Float32Array, g.dataSync() as Float32Array];
  });
}

// The other ops of MobileNet- and ResNet-style networks: pooling, padding, residual adds, the
// ResNet stem (7x7 stride 2), global average pooling, and both cross-entropy losses.
for (const [k, stride, pad] of [
  [3, 2, 'same'],
  [3, 2, 'valid'],
  [2, 2, 'valid'],
  [3, 1, 'same'],
] as [number, number, 'same' | 'valid'][]) {
  const s = seed++;
  cases.push({ name: `maxPool k${k} s${stride} ${pad}`, run: () => inputGrad((x) => tf.maxPool(x, k, stride, pad), [2, 9, 8, 5], s) });
  cases.push({ name: `avgPool k${k} s${stride} ${pad}`, run: () => inputGrad((x) => tf.avgPool(x, k, stride, pad), [2, 9, 8, 5], s) });
}
cases.push({
  // Values on a coarse grid make ties in most windows: the first maximum must get the gradient.
  name: 'maxPool with tied values',
  run: () =>
    tf.tidy(() => {
      const x = tf.div(tf.round(tf.mul(rand([3, 8, 7, 6], 650), 2)), 2);
      const r = rand(tf.maxPool(x as tf.Tensor4D, 3, 2, 'same').shape, 651);
      return [tf.grad((a: tf.Tensor) => tf.sum(tf.mul(tf.maxPool(a as tf.Tensor4D, 3, 2, 'same'), r)))(x).dataSync() as Float32Array];
    }),
});
{
  const [s1, s2] = [seed++, seed++];
  cases.push({
    name: 'zero padding (ResNet ZeroPadding2D)',
    run: () => inputGrad((x) => tf.pad(x, [[0, 0], [3, 3], [2, 1], [0, 0]]), [2, 6, 5, 3], s1),
  });
  cases.push({
    name: 'global average pooling (Mean over H, W)',
    run: () => inputGrad((x) => tf.mean(x, [1, 2]), [3, 7, 6, 8], s2),
  });
}
{
  const s = seed;
  cases.push({
    name: 'ResNet stem (conv 7x7 stride 2, max pool 3x3 stride 2) into a residual add',
    run: () =>
      convGrads((x, w) => {
        const pooled = tf.maxPool(tf.relu(tf.conv2d(x, w, 2, 'same')), 3, 2, 'same');
        return tf.add(pooled, tf.relu6(tf.mul(pooled, 2)));
      }, [2, 16, 15, 3], [7, 7, 3, 6], s),
  });
}
for (const [b, c, s] of [
  [4, 5, 900],
  [32, 100, 901],
]) {
  cases.push({
    name: `softmax cross-entropy and soft-label cross-entropy ${b}x${c}`,
    run: () =>
      tf.tidy(() => {
        const logits = tf.mul(rand([b, c], s), 4);
        const labels = tf.oneHot(tf.tensor1d(Array.from({ length: b }, (_, i) => (i * 7) % c), 'int32'), c);
        const soft = tf.softmax(rand([b, c], s + 1));
        const ce = tf.grad((z: tf.Tensor) => tf.losses.softmaxCrossEntropy(labels, z))(logits);
        const softCe = tf.grad((z: tf.Tensor) => tf.neg(tf.mean(tf.sum(tf.mul(soft, tf.logSoftmax(z)), 1))))(logits);
        return [ce, softCe].map((t) => t.dataSync() as Float32Array);
      }),
  });
}
// The library's losses (one kernel each once registered; tf ops in the reference), with logits
// far apart so that probabilities underflow, and soft targets that do not sum to 1. Class
// counts that are multiples of 4 go through our WASM kernel, others through JS.
for (const [b, c, spread, s] of [
  [4, 5, 3, 910],
  [32, 1000, 4, 911],
  [6, 50, 120, 912],
  [6, 48, 120, 913],
]) {
  cases.push({
    name: `cotuning loss terms ${b}x${c}, logits ×${spread}`,
    run: () =>
      tf.tidy(() => {
        const logits = tf.mul(rand([b, c], s), spread) as tf.Tensor2D;
        const labels = tf.tensor1d(Array.from({ length: b }, (_, i) => (i * 7) % c), 'int32');
        const soft = tf.mul(tf.softmax(rand([b, c], s + 1)), 0.9) as tf.Tensor2D;
        const [ce, dCe] = [crossEntropy(logits, labels), tf.grad((z: tf.Tensor) => crossEntropy(z as tf.Tensor2D, labels))(logits)];
        const [sce, dSce] = [softCrossEntropy(logits, soft), tf.grad((z: tf.Tensor) => softCrossEntropy(z as tf.Tensor2D, soft))(logits)];
        return [ce, dCe, sce, dSce].map((t) => t.dataSync() as Float32Array);
      }),
  });
}

// The optimiser: fused into one kernel on WASM, tf ops on the CPU reference. Three steps, so
// the first (velocity = gradient) and later ones are both covered; sizes with a scalar tail.
cases.push({
  name: 'Nesterov SGD with weight decay, 3 steps',
  run: () => {
    const vars = [[37], [3, 3, 8, 1], [1]].map((shape, i) => tf.variable(rand(shape, 960 + i)));
    const optimizer = new NesterovSgd(0.9, 5e-4);
    for (let step = 0; step < 3; step++) {
      const grads = new Map(vars.map((v, i) => [v, rand(v.shape, 970 + 10 * step + i)]));
      optimizer.apply(grads, [{ variables: vars, lr: 0.1 / (step + 1) }]);
      tf.dispose([...grads.values()]);
    }
    const out = [...vars, ...optimizer.state(vars).map((v) => v as tf.Variable)].map((t) => t.dataSync().slice() as Float32Array);
    optimizer.dispose();
    tf.dispose(vars);
    return out;
  },
});

/** Same computations with dense (zero-inserted) filters, for the dilated cases' references. */
function dilatedRef(depthwise: boolean, d: number, pad: 'same' | 'valid', s: number, channels = 3): Float32Array[] {
  const wShape = depthwise ? [3, 3, channels, 1] : [3, 3, channels, 2];
  return tf.tidy(() => {
    const x = rand([2, 11, 10, channels], s) as tf.Tensor4D;
    const w = rand(wShape, s + 1) as tf.Tensor4D;
    const wd = dilateFilter(w, d);
    const f = (a: tf.Tensor4D, b: tf.Tensor4D) => (depthwise ? tf.depthwiseConv2d(a, b, 1, pad) : tf.conv2d(a, b, 1, pad));
    const r = rand(f(x, wd).shape, s + 2);
    const [gx, gw] = tf.grads((a, b) => tf.sum(tf.mul(f(a as tf.Tensor4D, b as tf.Tensor4D), r)))([x, wd]);
    return [gx.dataSync() as Float32Array, undilate(gw.dataSync() as Float32Array, wShape, d)];
  });
}

// ---- One real training step of MobileNet v1 0.25 --------------------------------------------

const STEP_SIZE = 64;
const STEP_BATCH = 4;
const TARGET_CLASSES = 5;

interface StepResult {
  /** Trainable weights after one step, then BN moving statistics. */
  weights: Float32Array[];
  loss: number;
}

/** Two-head step: backbone in training mode, CE + 2.3·soft CE, momentum SGD with weight decay. */
async function trainingSteps(steps: number, onStep?: (i: number) => void): Promise<StepResult> {
  const model = await loadLayersModel(MOBILENET_DIR, STEP_SIZE);
  const backbone = tf.model({ inputs: model.inputs, outputs: model.getLayer('global_average_pooling2d_1').output as tf.SymbolicTensor });
  const [k, b] = model.getLayer('conv_preds').getWeights();
  const sourceW = tf.variable(tf.reshape(k, [256, 1000]));
  const sourceB = tf.variable(b.clone());
  const targetW = tf.variable(tf.mul(rand([256, TARGET_CLASSES], 900), 0.05));
  const targetB = tf.variable(tf.zeros([TARGET_CLASSES]));
  const vars = [...backbone.trainableWeights.map((w) => w.read() as tf.Variable), targetW, targetB, sourceW, sourceB];
  const x = rand([STEP_BATCH, STEP_SIZE, STEP_SIZE, 3], 901);
  const yT = tf.oneHot(tf.tensor1d([0, 3, 1, 4], 'int32'), TARGET_CLASSES);
  const ySoft = tf.softmax(tf.mul(rand([STEP_BATCH, 1000], 902), 3));
  const optimizer = tf.train.momentum(0.05, 0.9, true);
  let loss = 0;
  for (let i = 0; i < steps; i++) {
    tf.tidy(() => {
      const { value, grads } = tf.variableGrads(() => {
        const f = backbone.apply(x, { training: true }) as tf.Tensor2D;
        const ce = tf.losses.softmaxCrossEntropy(yT, tf.add(tf.matMul(f, targetW), targetB));
        const ls = tf.logSoftmax(tf.add(tf.matMul(f, sourceW), sourceB));
        return tf.add(ce, tf.mul(2.3, tf.neg(tf.mean(tf.sum(tf.mul(ySoft, ls), -1))))) as tf.Scalar;
      }, vars);
      const decayed: Record<string, tf.Tensor> = {};
      for (const v of vars) decayed[v.name] = tf.add(grads[v.name], tf.mul(5e-4, v));
      optimizer.applyGradients(decayed as tf.NamedTensorMap & Record<string, tf.Variable>);
      loss = value.dataSync()[0];
    });
    onStep?.(i);
  }
  const moving = model.layers.filter((l) => l.getClassName() === 'BatchNormalization').flatMap((l) => l.getWeights().slice(2));
  const weights = [...vars, ...moving].map((t) => t.dataSync().slice() as Float32Array);
  tf.dispose([x, yT, ySoft, sourceW, sourceB, targetW, targetB]);
  optimizer.dispose();
  model.dispose();
  return { weights, loss };
}

// ---- Run ------------------------------------------------------------------------------------

const references = new Map<string, Float32Array[]>();
let stepReference: StepResult;
let initialWeights: Float32Array[];

describe('fast gradients', () => {
  before(async () => {
    assert.ok(await tf.setBackend('cpu'));
    for (const c of cases) references.set(c.name, (c.reference ?? c.run)());
    initialWeights = (await trainingSteps(0)).weights;
    stepReference = await trainingSteps(1);
  });

  for (const backend of ['wasm', 'cpu']) {
    it(`${backend}: every gradient matches the stock CPU kernels (rel. error ≤ ${TOL})`, async (t) => {
      assert.ok(await tf.setBackend(backend));
      await registerFastGradients(backend);
      let worst = 0;
      for (const c of cases) {
        const got = c.run();
        const want = references.get(c.name) as Float32Array[];
        assert.equal(got.length, want.length, c.name);
        got.forEach((g, i) => {
          const e = relError(g, want[i]);
          worst = Math.max(worst, e);
          assert.ok(e <= TOL, `${backend} ${c.name} output ${i}: relative error ${e.toExponential(2)}`);
        });
      }
      t.diagnostic(`${cases.length} cases, worst relative error ${worst.toExponential(2)}`);
      assert.ok(worst > 0 || backend === 'cpu', 'results bit-identical to the reference: the fast kernels did not run');
    });
  }

  it('wasm: one MobileNet training step gives the CPU stock weights; no leaks, no CPU fallback', async (t) => {
    assert.ok(await tf.setBackend('wasm'));
    await registerFastGradients('wasm');
    await registerFastGradients('wasm'); // idempotent
    const cpu = tf.findBackend('cpu') as tf.KernelBackend;
    const cpuData = cpu.numDataIds();
    assert.ok(wasmKernels(tf.backend()), 'our WASM SIMD kernels did not load');
    const counts: number[] = [];
    let before1: Float32Array[] = [];
    const profile = await tf.profile(async () => {
      before1 = (await trainingSteps(1)).weights;
    });
    const result = await trainingSteps(10, () => counts.push(tf.memory().numTensors));
    assert.equal(cpu.numDataIds(), cpuData, 'the step created tensors on the cpu backend');
    assert.deepEqual(counts.slice(1), counts.slice(1).map(() => counts[1]), `numTensors grows: ${counts.join(' ')}`);
    // The first convolution's input is the image: its gradient is never needed, so never computed.
    const imageGrads = profile.kernels.filter(
      (k) => k.name === 'Conv2DBackpropInput' && JSON.stringify(k.outputShapes[0]) === JSON.stringify([STEP_BATCH, STEP_SIZE, STEP_SIZE, 3]),
    );
    assert.equal(imageGrads.length, 0, 'a training step computed the gradient of the input images');
    // Every batch norm feeds only a relu6 Activation: each pair runs fused (relu6-fusion.ts).
    assert.equal(profile.kernels.filter((k) => k.name === 'ClipByValue').length, 0, 'relu6 ran apart from batch norm');
    // Compare the updates (new − initial), which are small against the weights themselves.
    // Each new value is rounded to float32, so an update is only known to one unit in the last
    // place of the weight: for BN moving statistics (moved by 1 % of a batch difference) that is
    // up to 0.5 % of the update. Differences within 2 such units are not counted.
    const ulp = (v: number): number => 2 ** (Math.floor(Math.log2(Math.abs(v) || 2 ** -126)) - 23);
    let worst = 0;
    before1.forEach((w, i) => {
      const want = stepReference.weights[i].map((v, j) => v - initialWeights[i][j]);
      const got = w.map((v, j) => {
        const d = v - initialWeights[i][j];
        const slack = 2 * ulp(stepReference.weights[i][j]);
        return Math.abs(d - want[j]) <= slack ? want[j] : d - Math.sign(d - want[j]) * slack;
      });
      const e = relError(got, want);
      worst = Math.max(worst, e);
      assert.ok(e <= 2e-3, `weight ${i}: relative error of the update ${e.toExponential(2)}`);
    });
    t.diagnostic(`worst relative error of a weight update ${worst.toExponential(2)}; numTensors per step ${counts.join(' ')}`);
    assert.ok(worst > 0, 'wasm and cpu produced bit-identical updates');
    assert.ok(Number.isFinite(result.loss));
  });

  it('wasm: the library\'s training step keeps the tensor count and the WASM heap flat', async (t) => {
    assert.ok(await tf.setBackend('wasm'));
    const net = await buildNet(MOBILENET_DIR, { numClasses: TARGET_CLASSES, imageSize: STEP_SIZE, seed: 3 });
    const groups = trainableGroups(net, true);
    const optimizer = new NesterovSgd(0.9, 5e-4);
    const soft = tf.softmax(rand([STEP_BATCH, 1000], 990)) as tf.Tensor2D;
    const heapBytes = (): number => (tf.backend() as unknown as { wasm: { HEAPU8: Uint8Array } }).wasm.HEAPU8.length;
    const counts: number[] = [];
    const heap: number[] = [];
    try {
      for (let step = 0; step < 30; step++) {
        const x = rand([STEP_BATCH, STEP_SIZE, STEP_SIZE, 3], 1000 + step) as tf.Tensor4D;
        const labels = tf.tensor1d([0, 3, 1, 4], 'int32');
        trainStep(net, optimizer, groups, { x, labels, softTargets: soft }, 2.3, { backbone: 1e-3, sourceHead: 1e-3, targetHead: 1e-2 });
        tf.dispose([x, labels]);
        counts.push(tf.memory().numTensors);
        heap.push(heapBytes());
      }
    } finally {
      optimizer.dispose();
      soft.dispose();
      disposeNet(net);
    }
    // Step 1 creates the optimiser's velocity; the allocator settles in the first steps (the heap never shrinks).
    const flat = (a: number[]) => a.slice(5).every((v) => v === a[5]);
    assert.ok(flat(counts), `numTensors grows: ${counts.join(' ')}`);
    assert.ok(flat(heap), `WASM heap grows: ${heap.map((b) => (b / 2 ** 20).toFixed(1)).join(' ')}`);
    t.diagnostic(`numTensors ${counts[29]}, WASM heap ${(heap[29] / 2 ** 20).toFixed(1)} MB over 30 steps`);
  });
});

