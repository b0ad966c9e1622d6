import * as tf from '@tensorflow/tfjs';
import { patchRelu6Activation, relu6MaskGradKernel } from './activations.js';
import { batchNormKernels, patchBatchNormLayer } from './batchnorm.js';
import { convGradConfigs, convGradKernels, patchConv2DLayer, pointwiseConv2DKernel } from './conv-grads.js';
import { crossEntropyKernels } from './cross-entropy.js';
import { nesterovUpdateKernel } from './nesterov.js';
import { patchModelCall } from './relu6-fusion.js';
import { loadWasmKernels, wasmKernels } from './wasm-kernels.js';
import {
  fusedBatchNormGradConfig,
  identityKernel,
  leadingSumKernel,
  matMulGradConfig,
  maxPoolGradKernel,
  relu6GradConfig,
  relu6GradKernel,
  sameDtypeCastKernel,
  smallMatMulKernel,
} from './misc-grads.js';

/**
 * Fast training kernels for the WASM and pure-JS CPU backends.
 *
 * WASM lacks Conv2DBackpropFilter and both depthwise gradient kernels, and the CPU
 * backend's versions are per-element JS loops. Everything registered here is composed of
 * forward kernels (conv, depthwise conv, matMul, pad, transpose, sum) that XNNPACK runs at
 * forward-pass speed, plus, on WASM, our SIMD kernels (wasm-kernels.ts) where XNNPACK has no
 * fast form; batch norm in training mode becomes one op with a fused gradient.
 */

/** Backends that get the kernels below; others (tfjs-node) have fast native gradients. */
const SUPPORTED = new Set(['wasm', 'cpu']);
const registered = new Set<string>();
const registering = new Map<string, Promise<void>>();
let gradientsRegistered = false;

function replaceKernel(config: tf.KernelConfig): void {
  // Unregister first so that re-registration does not print tfjs's "already registered" warning.
  if (tf.getKernel(config.kernelName, config.backendName)) tf.unregisterKernel(config.kernelName, config.backendName);
  tf.registerKernel(config);
}

function replaceGradient(config: tf.GradConfig): void {
  if (tf.getGradient(config.kernelName)) tf.unregisterGradient(config.kernelName);
  tf.registerGradient(config);
}

/**
 * Register the fast gradient kernels on `backend` ('wasm' or 'cpu'; others are ignored).
 * Call after the backend is initialised (tf.setBackend + tf.ready). Idempotent.
 */
export function registerFastGradients(backend: string): Promise<void> {
  if (!SUPPORTED.has(backend)) return Promise.resolve();
  let pending = registering.get(backend);
  if (!pending) {
    pending = register(backend);
    registering.set(backend, pending);
  }
  return pending;
}

async function register(backend: string): Promise<void> {
  const instance = tf.findBackend(backend);
  if (backend === 'wasm' && instance) await loadWasmKernels(instance);
  for (const config of convGradKernels(backend)) replaceKernel(config);
  for (const config of batchNormKernels(backend)) replaceKernel(config);
  for (const config of crossEntropyKernels(backend)) replaceKernel(config);
  replaceKernel(relu6GradKernel(backend));
  replaceKernel(relu6MaskGradKernel(backend));
  // The CPU backend's Identity already shares the buffer; WASM's copies every tensor the tape saves.
  if (backend === 'wasm') {
    replaceKernel(identityKernel(backend));
    replaceKernel(sameDtypeCastKernel(backend));
    replaceKernel(maxPoolGradKernel(backend));
    if (instance && wasmKernels(instance)) {
      replaceKernel(nesterovUpdateKernel(backend));
      replaceKernel(smallMatMulKernel(backend));
      replaceKernel(pointwiseConv2DKernel(backend));
      replaceKernel(leadingSumKernel(backend));
    }
  }
  registered.add(backend);
  if (!gradientsRegistered) {
    // Gradient configs are global; they only use kernels that exist on every backend,
    // except dilated convolutions, which the conv gradients check for.
    for (const config of convGradConfigs(registered)) replaceGradient(config);
    replaceGradient(fusedBatchNormGradConfig);
    replaceGradient(relu6GradConfig(registered));
    replaceGradient(matMulGradConfig(tf.getGradient('BatchMatMul')));
    gradientsRegistered = true;
  }
  patchModelCall();
  patchBatchNormLayer(registered);
  patchRelu6Activation(registered);
  patchConv2DLayer(registered);
}

/** Backends on which registerFastGradients has run. */
export function fastGradientBackends(): ReadonlySet<string> {
  return registered;
}
