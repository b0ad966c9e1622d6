import * as tf from '@tensorflow/tfjs';
import { SOFT_CE_KERNEL, fusedSoftCrossEntropy } from './backend/cross-entropy.js';

export interface LossTerms {
  total: tf.Scalar;
  target: tf.Scalar;
  /** Zero tensor when λ = 0 / no source head. */
  source: tf.Scalar;
}

/** The backend has the two-kernel version (WASM and CPU with our kernels; native backends use tf ops). */
const hasFusedKernel = (): boolean => tf.getKernel(SOFT_CE_KERNEL, tf.getBackend()) !== undefined;

/**
 * Mean cross-entropy of integer labels, via log-softmax so it never takes log(0).
 * Shape: logits [B, C], labels [B] int32 → scalar.
 */
export function crossEntropy(logits: tf.Tensor2D, labels: tf.Tensor1D): tf.Scalar {
  if (hasFusedKernel()) return tf.tidy(() => fusedSoftCrossEntropy(logits, tf.oneHot(labels, logits.shape[1]).toFloat() as tf.Tensor2D));
  return tf.tidy(() => {
    const logp = tf.logSoftmax(logits);
    const picked = tf.sum(tf.mul(logp, tf.oneHot(labels, logits.shape[1])), 1);
    return tf.neg(tf.mean(picked)) as tf.Scalar;
  });
}

/**
 * Soft-label cross-entropy −(1/B) Σ_b Σ_j p[b, j]·log_softmax(z[b])_j. Zeros in p stay finite
 * because log-softmax is fused. Its gradient w.r.t. z is (softmax(z) − p) / B.
 * Shape: logits [B, S], soft [B, S] → scalar.
 */
export function softCrossEntropy(logits: tf.Tensor2D, soft: tf.Tensor2D): tf.Scalar {
  if (hasFusedKernel()) return fusedSoftCrossEntropy(logits, soft);
  return tf.tidy(() => tf.neg(tf.mean(tf.sum(tf.mul(soft, tf.logSoftmax(logits)), 1))) as tf.Scalar);
}

/**
 * Co-Tuning loss L = CE(z_t, y) + λ·softCE(z_s, R[y]). `relationshipRows` are R[y] for the batch.
 * Shape: targetLogits [B, C], labels [B], sourceLogits [B, S] | null, relationshipRows [B, S] | null.
 */
export function coTuningLoss(
  targetLogits: tf.Tensor2D,
  labels: tf.Tensor1D,
  sourceLogits: tf.Tensor2D | null,
  relationshipRows: tf.Tensor2D | null,
  lambda: number,
): LossTerms {
  const target = crossEntropy(targetLogits, labels);
  const source = sourceLogits && relationshipRows && lambda > 0 ? softCrossEntropy(sourceLogits, relationshipRows) : tf.scalar(0);
  const total = lambda > 0 ? (tf.add(target, tf.mul(lambda, source)) as tf.Scalar) : target.clone();
  return { total, target, source };
}
