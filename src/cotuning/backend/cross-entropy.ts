import * as tf from '@tensorflow/tfjs';
import { withScope } from './kernel-ops.js';

type TensorInfo = tf.TensorInfo;

/**
 * Soft-label cross-entropy of logits as two kernels (forward, backward) instead of about twenty
 * tf ops. On WASM the per-op cost dominated: for 1000 source classes the tf-ops version took
 * about 2 ms of a 3 ms source head per step. Same maths:
 *   loss = −(1/B) Σ_b (Σ_j p_bj·z_bj − lse_b·Σ_j p_bj),  ∂loss/∂z = (softmax(z)·Σ_j p_bj − p) / B
 * with lse_b = log Σ_j exp z_bj = max_j z_bj − log max_j softmax(z)_bj: the largest probability
 * is at least 1/N, so its log is accurate (no log of an underflowed probability).
 */
export const SOFT_CE_KERNEL = 'CotuneSoftCrossEntropy';
export const SOFT_CE_GRAD_KERNEL = 'CotuneSoftCrossEntropyGrad';

/** logits, targets [B, N] → loss (scalar), softmax [B, N], target mass per row [B]. */
function softCrossEntropyKernel(backendName: string): tf.KernelConfig {
  return {
    kernelName: SOFT_CE_KERNEL,
    backendName,
    kernelFunc: ({ inputs, backend }) => {
      const { logits, targets } = inputs as { logits: TensorInfo; targets: TensorInfo };
      const be = backend as tf.KernelBackend;
      const [b] = logits.shape;
      const probs = withScope(be, backendName, (s) => s.run('Softmax', { logits }, { dim: logits.shape.length - 1 }));
      const mass = withScope(be, backendName, (s) => s.sum(targets, [1]));
      const loss = withScope(be, backendName, (s) => {
        const max = (t: TensorInfo) => s.run('Max', { x: t }, { reductionIndices: [1], keepDims: false });
        const lse = s.run('Sub', { a: max(logits), b: s.run('Log', { x: max(probs) }) });
        const perRow = s.run('Sub', { a: s.sum(s.run('Multiply', { a: targets, b: logits }), [1]), b: s.run('Multiply', { a: lse, b: mass }) });
        return s.run('Multiply', { a: s.sum(perRow, [0]), b: s.scalar(-1 / b) });
      });
      return [loss, probs, mass];
    },
  };
}

/** dy (scalar), softmax, targets [B, N], mass [B] → ∂loss/∂logits [B, N]. */
function softCrossEntropyGradKernel(backendName: string): tf.KernelConfig {
  return {
    kernelName: SOFT_CE_GRAD_KERNEL,
    backendName,
    kernelFunc: ({ inputs, backend }) =>
      withScope(backend as tf.KernelBackend, backendName, (s) => {
        const { dy, probs, targets, mass } = inputs as Record<string, TensorInfo>;
        const [b] = probs.shape;
        const scaled = s.run('Multiply', { a: probs, b: s.reshape(mass, [b, 1]) });
        return s.run('Multiply', { a: s.run('Sub', { a: scaled, b: targets }), b: s.run('Multiply', { a: dy, b: s.scalar(1 / b) }) });
      }),
  };
}

export function crossEntropyKernels(backendName: string): tf.KernelConfig[] {
  return [softCrossEntropyKernel(backendName), softCrossEntropyGradKernel(backendName)];
}

/**
 * The loss above through the two kernels. `targets` are constants (relationship rows or one-hot
 * labels): no gradient flows to them. Shape: logits, targets [B, N] → scalar.
 */
export function fusedSoftCrossEntropy(logits: tf.Tensor2D, targets: tf.Tensor2D): tf.Scalar {
  const op = tf.customGrad((z, save) => {
    const [loss, probs, mass] = tf.engine().runKernel(SOFT_CE_KERNEL, { logits: z as tf.Tensor, targets }) as tf.Tensor[];
    // Saved with the rest: the caller may dispose `targets` before backprop runs.
    (save as tf.GradSaveFunc)([probs, mass, targets]);
    return {
      value: loss,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [p, m, t] = saved;
        return tf.engine().runKernel(SOFT_CE_GRAD_KERNEL, { dy, probs: p, targets: t, mass: m }) as tf.Tensor;
      },
    };
  });
  return op(logits) as tf.Scalar;
}
