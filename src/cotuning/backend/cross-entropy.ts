import * as tf from '@tensorflow/tfjs';
import { withScope } from './kernel-ops.js';
import { wasmKernels } from './wasm-kernels.js';

type TensorInfo = tf.TensorInfo;

/**
 * Soft-label cross-entropy of logits as one kernel that gives the loss and its gradient
 * together, instead of about twenty tf ops; the backward pass only scales the gradient. On WASM
 * the per-op cost dominated: for 1000 source classes the tf-ops version took about 2 ms of a
 * 3 ms source head per step. Same maths:
 *   loss = −(1/B) Σ_b (Σ_j p_bj·z_bj − lse_b·Σ_j p_bj),  ∂loss/∂z = (softmax(z)·Σ_j p_bj − p) / B
 * with lse_b = log Σ_j exp z_bj = max_j z_bj − log max_j softmax(z)_bj: the largest probability
 * is at least 1/N, so its log is accurate (no log of an underflowed probability).
 */
export const SOFT_CE_KERNEL = 'CotuneSoftCrossEntropy';

/** logits, targets [B, N] → loss (scalar), ∂loss/∂logits [B, N]. */
function softCrossEntropyKernel(backendName: string): tf.KernelConfig {
  return {
    kernelName: SOFT_CE_KERNEL,
    backendName,
    kernelFunc: ({ inputs, backend }) => {
      const { logits, targets } = inputs as { logits: TensorInfo; targets: TensorInfo };
      const be = backend as tf.KernelBackend;
      const [b, n] = logits.shape;
      const probs = withScope(be, backendName, (s) =>
        s.run('Softmax', { logits }, { dim: logits.shape.length - 1 }),
      );
      try {
        const own = wasmKernels(be);
        // On WASM the rest is one pass over the rows in our kernel (or in JS): cheaper than its ten kernel calls.
        if (own) {
          return (
            own.softCrossEntropy(logits, probs, targets) ??
            own.inJs([logits, probs, targets], [[], [b, n]], ([z, p, t], [loss, grad]) =>
              rowsInJs(z, p, t, b, n, loss, grad),
            )
          );
        }
        return composed(be, backendName, logits, probs, targets);
      } finally {
        be.disposeData(probs.dataId);
      }
    },
  };
}

/** The loss and gradient of B rows of N logits `z`, their softmax `p` and targets `t`, in float64. */
function rowsInJs(
  z: Float32Array,
  p: Float32Array,
  t: Float32Array,
  b: number,
  n: number,
  loss: Float32Array,
  grad: Float32Array,
): void {
  let total = 0;
  for (let r = 0; r < b; r++) {
    const row = r * n;
    let zMax = -Infinity;
    let pMax = 0;
    let targetDotLogits = 0;
    let mass = 0;
    for (let j = row; j < row + n; j++) {
      zMax = Math.max(zMax, z[j]);
      pMax = Math.max(pMax, p[j]);
      targetDotLogits += t[j] * z[j];
      mass += t[j];
    }
    total += targetDotLogits - (zMax - Math.log(pMax)) * mass;
    for (let j = row; j < row + n; j++) grad[j] = (p[j] * mass - t[j]) / b;
  }
  loss[0] = -total / b;
}

/** The same from backend kernels (the pure-JS CPU backend). */
function composed(
  be: tf.KernelBackend,
  backendName: string,
  logits: TensorInfo,
  probs: TensorInfo,
  targets: TensorInfo,
): TensorInfo[] {
  const [b] = logits.shape;
  const mass = withScope(be, backendName, (s) => s.reshape(s.sum(targets, [1]), [b, 1]));
  try {
    const loss = withScope(be, backendName, (s) => {
      const max = (t: TensorInfo) => s.run('Max', { x: t }, { reductionIndices: [1], keepDims: false });
      const lse = s.run('Sub', { a: max(logits), b: s.run('Log', { x: max(probs) }) });
      const perRow = s.run('Sub', {
        a: s.sum(s.run('Multiply', { a: targets, b: logits }), [1]),
        b: s.run('Multiply', { a: lse, b: s.reshape(mass, [b]) }),
      });
      return s.run('Multiply', { a: s.sum(perRow, [0]), b: s.scalar(-1 / b) });
    });
    const grad = withScope(be, backendName, (s) =>
      s.run('Multiply', {
        a: s.run('Sub', { a: s.run('Multiply', { a: probs, b: mass }), b: targets }),
        b: s.scalar(1 / b),
      }),
    );
    return [loss, grad];
  } finally {
    be.disposeData(mass.dataId);
  }
}

export function crossEntropyKernels(backendName: string): tf.KernelConfig[] {
  return [softCrossEntropyKernel(backendName)];
}

/**
 * The loss above through the kernel. `targets` are constants (relationship rows or one-hot
 * labels): no gradient flows to them. Shape: logits, targets [B, N] → scalar.
 */
export function fusedSoftCrossEntropy(logits: tf.Tensor2D, targets: tf.Tensor2D): tf.Scalar {
  const op = tf.customGrad((z, save) => {
    const [loss, grad] = tf
      .engine()
      .runKernel(SOFT_CE_KERNEL, { logits: z as tf.Tensor, targets }) as tf.Tensor[];
    (save as tf.GradSaveFunc)([grad]);
    return { value: loss, gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => tf.mul(saved[0], dy) };
  });
  return op(logits) as tf.Scalar;
}
