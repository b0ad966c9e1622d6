import * as tf from '@tensorflow/tfjs';
import { wasmKernels } from './wasm-kernels.js';

type TensorInfo = tf.TensorInfo;

/**
 * The optimiser's update as one kernel on WASM. Done with tf ops it costs eight kernels and
 * three scalar uploads per variable, and a MobileNet has about 80 variables: per-op overhead
 * made it about a tenth of a training step.
 */
export const NESTEROV_UPDATE_KERNEL = 'CotuneNesterovUpdate';

export interface NesterovAttrs {
  lr: number;
  momentum: number;
  weightDecay: number;
}

/** Inputs theta, grad and (after the first step) velocity → [theta', velocity']. */
export function nesterovUpdateKernel(backendName: string): tf.KernelConfig {
  return {
    kernelName: NESTEROV_UPDATE_KERNEL,
    backendName,
    kernelFunc: ({ inputs, attrs, backend }) => {
      const { theta, grad, velocity } = inputs as { theta: TensorInfo; grad: TensorInfo; velocity?: TensorInfo };
      const own = wasmKernels(backend as tf.KernelBackend);
      if (!own) throw new Error(`${NESTEROV_UPDATE_KERNEL}: the WASM kernels are not loaded`);
      const { lr, momentum, weightDecay } = attrs as unknown as NesterovAttrs;
      return own.nesterovUpdate(theta, velocity ?? null, grad, lr, momentum, weightDecay);
    },
  };
}
