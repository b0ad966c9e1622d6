import * as tf from '@tensorflow/tfjs';
import { withScope } from './kernel-ops.js';
import { isClamped } from './relu6-fusion.js';
import { wasmKernels } from './wasm-kernels.js';

type TensorInfo = tf.TensorInfo;

/**
 * ReLU6 as tf.layers computes it for Activation('relu6'): minimum(6, relu(x)). On WASM the
 * scalar-broadcast Minimum takes a generic slow path (about 8x a clamp), and its gradient adds
 * LessEqual/Greater/Cast/Mul passes on top of Relu's Step. Here the forward is one clamp and
 * the backward one mask kernel with the same gradient: dy · [0 < x < 6].
 */

export const RELU6_MASK_GRAD_KERNEL = 'CotuneRelu6MaskGrad';

/** dy · [0 < x < 6] = dy · Step(x) · Step(6 − x); 6 − x is exact near 6, so the mask is exact. */
export function relu6MaskGradKernel(backendName: string): tf.KernelConfig {
  return {
    kernelName: RELU6_MASK_GRAD_KERNEL,
    backendName,
    kernelFunc: ({ inputs, backend }) => {
      const { dy, x } = inputs as Record<string, TensorInfo>;
      return withScope(backend as tf.KernelBackend, backendName, (s) => {
        const own = wasmKernels(s.backend);
        if (own && dy.dtype === 'float32' && x.dtype === 'float32') return s.adopt(own.relu6Grad(dy, x));
        // 6 − x as a per-channel multiply-add (exact: −x is exact and the sum rounds once).
        const c = x.shape[x.shape.length - 1];
        const sixMinusX = s.affine(x, s.vector(c, -1), s.vector(c, 6));
        // Minimum is a slow generic kernel on WASM; Step and same-shape Multiply are fast.
        const below6 = s.run('Step', { x: sixMinusX }, { alpha: 0 });
        const above0 = s.run('Step', { x }, { alpha: 0 });
        return s.run('Multiply', { a: s.run('Multiply', { a: dy, b: above0 }), b: below6 });
      });
    },
  };
}

const relu6 = tf.customGrad((x, save) => {
  const t = x as tf.Tensor;
  (save as tf.GradSaveFunc)([t]);
  return {
    value: tf.clipByValue(t, 0, 6),
    gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) =>
      tf.engine().runKernel(RELU6_MASK_GRAD_KERNEL, { dy, x: saved[0] }) as tf.Tensor,
  };
});

interface ActivationInternals {
  apply(x: tf.Tensor, axis?: number): tf.Tensor;
}

let patched = false;

/**
 * Routes tf.layers' 'relu6' activation through the clamp + mask version on `backends`; the
 * output of a batch norm that already applied it (relu6-fusion.ts) passes through as is.
 */
export function patchRelu6Activation(backends: ReadonlySet<string>): void {
  if (patched) return;
  patched = true;
  const layer = tf.layers.activation({ activation: 'relu6' }) as unknown as { activation: ActivationInternals };
  const proto = Object.getPrototypeOf(layer.activation) as ActivationInternals;
  const original = proto.apply;
  proto.apply = function (this: ActivationInternals, x: tf.Tensor, axis?: number) {
    if (x.dtype !== 'float32' || !backends.has(tf.getBackend())) return original.call(this, x, axis);
    // A copy of the tensor object only (no data copy); its gradient is the identity.
    if (isClamped(x)) return x.clone();
    return relu6(x) as tf.Tensor;
  };
}
