import * as tf from '@tensorflow/tfjs';
import { withScope } from './kernel-ops.js';
import { wasmKernels } from './wasm-kernels.js';

type TensorInfo = tf.TensorInfo;

/**
 * Zero-copy Identity for WASM, as the CPU and WebGL backends do it: TF.js tensors are
 * immutable, so sharing the buffer with a reference count is safe. The engine clones every
 * tensor it saves for backprop, so the stock copying kernel costs one memcpy per saved tensor.
 */
export function identityKernel(backendName: string): tf.KernelConfig {
  const stock = tf.getKernel('Identity', backendName);
  return {
    kernelName: 'Identity',
    backendName,
    kernelFunc: (args) => {
      const x = (args.inputs as Record<string, TensorInfo>).x;
      if (x.dtype === 'string') return stock.kernelFunc(args);
      (args.backend as tf.KernelBackend).incRef(x.dataId);
      return { dataId: x.dataId, shape: x.shape, dtype: x.dtype };
    },
  };
}

/**
 * Cast to the tensor's own dtype without a copy on WASM, as the CPU backend does. The gradient
 * of every Identity (each Tensor.clone on the tape, e.g. a layer passing its input on) is such
 * a cast, and the stock kernel copies the whole tensor.
 */
export function sameDtypeCastKernel(backendName: string): tf.KernelConfig {
  const stock = tf.getKernel('Cast', backendName);
  return {
    kernelName: 'Cast',
    backendName,
    kernelFunc: (args) => {
      const x = (args.inputs as Record<string, TensorInfo>).x;
      if (x.dtype === 'string' || x.dtype !== (args.attrs as { dtype: string }).dtype) return stock.kernelFunc(args);
      (args.backend as tf.KernelBackend).incRef(x.dataId);
      return { dataId: x.dataId, shape: x.shape, dtype: x.dtype };
    },
  };
}

/**
 * Sum over every axis but the last on WASM through our channel sums: the gradient of a bias
 * added to a batch of rows, e.g. a head's. The stock kernel transposes the whole tensor first.
 */
export function leadingSumKernel(backendName: string): tf.KernelConfig {
  const stock = tf.getKernel('Sum', backendName);
  return {
    kernelName: 'Sum',
    backendName,
    kernelFunc: (args) => {
      const x = (args.inputs as Record<string, TensorInfo>).x;
      const { axis, keepDims } = args.attrs as { axis: number | number[]; keepDims: boolean };
      const own = wasmKernels(args.backend as tf.KernelBackend);
      const rank = x.shape.length;
      const axes = tf.util.parseAxisParam(axis, x.shape).sort((a, b) => a - b);
      const leading = rank >= 2 && axes.length === rank - 1 && axes.every((a, i) => a === i);
      if (!own || !leading || x.dtype !== 'float32' || tf.util.sizeFromShape(x.shape) === 0) return stock.kernelFunc(args);
      const total = own.channelTotals(x);
      if (!keepDims) return total;
      return withScope(args.backend as tf.KernelBackend, backendName, (s) => s.reshape(s.adopt(total), [...axes.map(() => 1), x.shape[rank - 1]]));
    },
  };
}

/**
 * MaxPoolGrad on WASM through our own kernel: the stock WASM kernel drops gradients when the
 * batch holds more than one image (checked against the CPU backend in the gradient tests).
 * Falls back to the stock kernel where our kernels did not load.
 */
export function maxPoolGradKernel(backendName: string): tf.KernelConfig {
  const stock = tf.getKernel('MaxPoolGrad', backendName);
  return {
    kernelName: 'MaxPoolGrad',
    backendName,
    kernelFunc: (args) => {
      const { dy, input } = args.inputs as Record<string, TensorInfo>;
      const own = wasmKernels(args.backend as tf.KernelBackend);
      if (!own || input.dtype !== 'float32' || input.shape.length !== 4) return stock.kernelFunc(args);
      const { filterSize, strides, pad, dimRoundingMode } = args.attrs as unknown as {
        filterSize: [number, number] | number;
        strides: [number, number] | number;
        pad: 'same' | 'valid' | number | tf.backend_util.ExplicitPadding;
        dimRoundingMode?: 'floor' | 'round' | 'ceil';
      };
      const info = tf.backend_util.computePool2DInfo(input.shape as [number, number, number, number], filterSize, strides, 1, pad, dimRoundingMode);
      return own.maxPoolGrad(input, dy, info);
    },
  };
}

/** Rows of the product up to which our kernels take a·b or a·bᵀ (measured faster at 32 rows, b 256x1000). */
const SMALL_MATMUL_ROWS = 64;

/**
 * Which of our kernels takes the 2-D product op(a)·op(b) of m×k by k×n, if any: a·b with few
 * rows (the heads' forward), aᵀ·b (their weight gradient: the kernel reads a's rows as they
 * are) and a·bᵀ with few rows (their input gradient dz·Wᵀ). Elsewhere XNNPACK does better.
 */
function ownMatMul(m: number, k: number, n: number, transposeA: boolean, transposeB: boolean): 'ab' | 'aTb' | 'abT' | undefined {
  if (transposeA && transposeB) return undefined;
  if (transposeA) return m % 4 === 0 && n % 8 === 0 ? 'aTb' : undefined;
  if (m > SMALL_MATMUL_ROWS || m % 4 !== 0) return undefined;
  if (transposeB) return n % 2 === 0 && k % 4 === 0 ? 'abT' : undefined;
  return n % 8 === 0 ? 'ab' : undefined;
}

/** True when the active backend runs op(a)·op(b) through ownMatMul's kernels. */
function ownMatMulActive(m: number, k: number, n: number, transposeA: boolean, transposeB: boolean): boolean {
  return tf.getBackend() === 'wasm' && wasmKernels(tf.backend()) !== undefined && ownMatMul(m, k, n, transposeA, transposeB) !== undefined;
}

/**
 * BatchMatMul on WASM through our kernels where ownMatMul takes the product: XNNPACK repacks b
 * on every call because the weights change each step, which cost more than the product (0.87 vs
 * 0.34 ms for 32x256 · 256x1000), and its transposed products are 10-20x slower. Everything
 * else (batches of matrices, other dtypes, other shapes) goes to the stock kernel.
 */
export function smallMatMulKernel(backendName: string): tf.KernelConfig {
  const stock = tf.getKernel('BatchMatMul', backendName);
  return {
    kernelName: 'BatchMatMul',
    backendName,
    kernelFunc: (args) => {
      const { a, b } = args.inputs as Record<string, TensorInfo>;
      const { transposeA = false, transposeB = false } = args.attrs as { transposeA?: boolean; transposeB?: boolean };
      const own = wasmKernels(args.backend as tf.KernelBackend);
      const batchOf = (t: TensorInfo) => t.shape.slice(0, -2).reduce((p, q) => p * q, 1);
      // Equal ranks: the output then keeps a's leading 1s; a b of higher rank broadcasts them (stock kernel).
      if (!own || a.dtype !== 'float32' || b.dtype !== 'float32' || a.shape.length < 2 || a.shape.length !== b.shape.length || batchOf(a) !== 1 || batchOf(b) !== 1) {
        return stock.kernelFunc(args);
      }
      const [ar, ac] = a.shape.slice(-2);
      const [br, bc] = b.shape.slice(-2);
      const [m, k] = transposeA ? [ac, ar] : [ar, ac];
      const [kb, n] = transposeB ? [bc, br] : [br, bc];
      const how = k === kb ? ownMatMul(m, k, n, transposeA, transposeB) : undefined;
      if (!how) return stock.kernelFunc(args);
      return withScope(args.backend as tf.KernelBackend, backendName, (s) => {
        const a2 = s.reshape(a, [ar, ac]);
        const b2 = s.reshape(b, [br, bc]);
        // a·b with b as it lies (matMul) where b fits its limit: 0.6-0.7 ms for 32x256 · 256x1000
        // against 1.0-1.6 through the transpose; else matMulTransposedA(x, y) = xᵀ·y with x = aᵀ.
        const out =
          how === 'abT'
            ? own.matMulTransposedB(a2, b2)
            : how === 'aTb'
              ? own.matMulTransposedA(a2, b2)
              : (own.matMul(a2, b2) ?? own.matMulTransposedA(s.transpose(a2, [1, 0]), b2));
        return s.reshape(s.adopt(out as TensorInfo), [...a.shape.slice(0, -2), m, n]);
      });
    },
  };
}

export const RELU6_GRAD_KERNEL = 'CotuneRelu6Grad';
/** Smallest float32 above 6: x ≤ 6 ⇔ SIX_UP − x > 0, exactly, for float32 x. */
const SIX_UP = Math.fround(6 + 2 ** -21);

/** dy · [0 < x ≤ 6] in 4 passes: Step(min(x, 6⁺ − x)) selects exactly 0 < x ≤ 6. */
export function relu6GradKernel(backendName: string): tf.KernelConfig {
  return {
    kernelName: RELU6_GRAD_KERNEL,
    backendName,
    kernelFunc: ({ inputs, backend }) => {
      const { dy, x } = inputs as Record<string, TensorInfo>;
      return withScope(backend as tf.KernelBackend, backendName, (s) => {
        const six = s.run('Fill', {}, { shape: [], value: SIX_UP, dtype: 'float32' });
        const inside = s.run('Minimum', { a: x, b: s.run('Sub', { a: six, b: x }) });
        return s.run('Multiply', { a: dy, b: s.run('Step', { x: inside }, { alpha: 0 }) });
      });
    },
  };
}

export const relu6GradConfig = (fastBackends: ReadonlySet<string>): tf.GradConfig => ({
  kernelName: 'Relu6',
  inputsToSave: ['x'],
  gradFunc: (dy, saved) => {
    const [x] = saved;
    const d = dy as tf.Tensor;
    if (fastBackends.has(tf.getBackend()) && x.dtype === 'float32') {
      return { x: () => tf.engine().runKernel(RELU6_GRAD_KERNEL, { dy: d, x }) as tf.Tensor };
    }
    return { x: () => tf.mul(d, tf.cast(tf.mul(tf.lessEqual(x, 6), tf.step(x)), 'float32')) };
  },
});

/**
 * FusedBatchNorm gradient (batch statistics treated as inputs, as in tfjs-core) without
 * tfjs-core's full-size tile(); the reductions shared by mean, variance and scale are done once.
 */
export const fusedBatchNormGradConfig: tf.GradConfig = {
  kernelName: 'FusedBatchNorm',
  inputsToSave: ['x', 'mean', 'variance', 'scale'],
  gradFunc: (dy, saved, attrs) => {
    const d = dy as tf.Tensor;
    const eps = (attrs as { varianceEpsilon: number }).varianceEpsilon;
    const [x, mean, variance, scale] = saved;
    const reduce = tf.backend_util.getReductionAxes(mean.shape, x.shape);
    const sumTo = (t: tf.Tensor) => tf.reshape(reduce.length > 0 ? tf.sum(t, reduce) : t, mean.shape);
    const rstd = tf.rsqrt(tf.add(variance, eps));
    const scaledRstd = scale == null ? rstd : tf.mul(scale, rstd);
    // Small per-channel tensors, computed once and shared by the closures below.
    const sumDy = sumTo(d);
    const sumDyXc = sumTo(tf.mul(d, tf.sub(x, mean)));
    return {
      x: () => tf.mul(d, scaledRstd),
      mean: () => tf.neg(tf.mul(sumDy, scaledRstd)),
      variance: () => tf.mul(tf.mul(sumDyXc, scaledRstd), tf.mul(tf.square(rstd), -0.5)),
      scale: () => tf.mul(sumDyXc, rstd),
      offset: () => sumDy,
    };
  },
};

/**
 * matMul as the backend runs it fastest: our kernels where they take the product (transposes
 * included), else as XNNPACK likes it: no transposed operands (their WASM path is 10-20x
 * slower), and the smaller matrix on the right, since the right operand is repacked on every call.
 * Returns a·b with `ta`/`tb` meaning "use the transpose of a / b".
 */
function fastMatMul(a: tf.Tensor2D, b: tf.Tensor2D, ta: boolean, tb: boolean): tf.Tensor2D {
  const [m, k] = ta ? [a.shape[1], a.shape[0]] : a.shape;
  const n = tb ? b.shape[0] : b.shape[1];
  if (ownMatMulActive(m, k, n, ta, tb)) return tf.matMul(a, b, ta, tb);
  // Direct: transpose what needs it, pack b (k·n). Swapped: (bᵀ·aᵀ)ᵀ packs aᵀ (m·k).
  const transposes = (ta ? m * k : 0) + (tb ? k * n : 0);
  const direct = transposes + k * n;
  const swapped = (ta ? 0 : m * k) + (tb ? 0 : k * n) + m * k + m * n;
  if (direct <= swapped) {
    return tf.matMul(ta ? tf.transpose(a) : a, tb ? tf.transpose(b) : b);
  }
  return tf.transpose(tf.matMul(tb ? b : tf.transpose(b), ta ? a : tf.transpose(a)));
}

/** BatchMatMul gradient for 2-D operands via fastMatMul; other ranks use tfjs-core's gradient. */
export function matMulGradConfig(stock: tf.GradConfig | undefined): tf.GradConfig {
  return {
    kernelName: 'BatchMatMul',
    inputsToSave: ['a', 'b'],
    gradFunc: (dy, saved, attrs) => {
      const [a, b] = saved;
      const { transposeA, transposeB } = attrs as { transposeA: boolean; transposeB: boolean };
      if (a.rank !== 2 || b.rank !== 2 || !stock) {
        if (!stock) throw new Error('fast gradients: no stock BatchMatMul gradient');
        return stock.gradFunc(dy, saved, attrs);
      }
      const [a2, b2, d] = [a as tf.Tensor2D, b as tf.Tensor2D, dy as tf.Tensor2D];
      // y = op(a)·op(b): d op(a) = dy·op(b)ᵀ, d op(b) = op(a)ᵀ·dy, transposed back where needed.
      return {
        a: () => (transposeA ? fastMatMul(b2, d, transposeB, true) : fastMatMul(d, b2, false, !transposeB)),
        b: () => (transposeB ? fastMatMul(d, a2, true, transposeA) : fastMatMul(a2, d, !transposeA, false)),
      };
    },
  };
}
