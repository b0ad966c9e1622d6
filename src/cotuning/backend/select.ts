import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { getThreadsCount } from '@tensorflow/tfjs-backend-wasm';
import { InvalidInputError } from '../errors.js';
import { registerFastGradients } from './gradients.js';
import { wasmKernels } from './wasm-kernels.js';
import { defaultWasmThreads, setWasmBackend } from './wasm-threads.js';

/** Backends in order of preference; the first that loads and initialises wins. */
export const BACKEND_PREFERENCE = ['tensorflow-gpu', 'tensorflow', 'wasm', 'cpu'] as const;
export type BackendChoice = (typeof BACKEND_PREFERENCE)[number];

export interface BackendInfo {
  /** Name reported by tf.getBackend() plus the package that provided it. */
  name: string;
  /** tf.getBackend() value: 'tensorflow', 'wasm' or 'cpu'. */
  tfBackend: string;
  /** WASM threads in use (1 on other backends). */
  threads: number;
  /** Whether our WASM kernels use fused multiply-add (wasm-fma.ts); false on other backends. */
  fusedMultiplyAdd: boolean;
}

export interface SelectBackendOptions {
  /** Force one backend ('tensorflow-gpu', 'tensorflow', 'wasm', 'cpu'); fails if it cannot load. */
  preferred?: string;
  /**
   * XNNPACK threads of the WASM backend (default 1). More than 1 starts tfjs-backend-wasm's
   * threaded build through wasm-threads.ts, which falls back to 1 thread (with a warning) if
   * that fails; BackendInfo.threads reports what is actually in use.
   */
  wasmThreads?: number;
}

let selected: BackendInfo | undefined;

/** Native bindings register the 'tensorflow' backend as a side effect of being imported. */
async function loadNative(pkg: string): Promise<boolean> {
  try {
    await import(pkg);
    return tf.findBackend('tensorflow') !== undefined;
  } catch {
    return false;
  }
}

async function tryBackend(choice: BackendChoice, options: SelectBackendOptions): Promise<BackendInfo | undefined> {
  if (choice === 'tensorflow-gpu' || choice === 'tensorflow') {
    const pkg = choice === 'tensorflow-gpu' ? '@tensorflow/tfjs-node-gpu' : '@tensorflow/tfjs-node';
    if (!(await loadNative(pkg)) || !(await tf.setBackend('tensorflow'))) return undefined;
    return { name: `tensorflow (${pkg})`, tfBackend: 'tensorflow', threads: 1, fusedMultiplyAdd: false };
  }
  if (!(await (choice === 'wasm' ? setWasmBackend(options.wasmThreads ?? defaultWasmThreads()) : tf.setBackend(choice)))) return undefined;
  await tf.ready();
  await registerFastGradients(choice);
  const fusedMultiplyAdd = wasmKernels(tf.backend())?.fusedMultiplyAdd() ?? false;
  return { name: choice, tfBackend: choice, threads: choice === 'wasm' ? getThreadsCount() : 1, fusedMultiplyAdd };
}

/**
 * Pick the fastest TF.js backend that works here: tfjs-node-gpu, then tfjs-node, then WASM,
 * then the pure-JS CPU backend. Idempotent: later calls return the first choice.
 */
export async function selectBackend(options: SelectBackendOptions = {}): Promise<BackendInfo> {
  if (selected) return selected;
  const wanted = options.preferred?.trim();
  if (wanted) {
    if (!(BACKEND_PREFERENCE as readonly string[]).includes(wanted)) {
      throw new InvalidInputError('backend', `backend: unknown backend "${wanted}"; expected one of ${BACKEND_PREFERENCE.join(', ')}`);
    }
    const info = await tryBackend(wanted as BackendChoice, options);
    if (!info) throw new Error(`backend: "${wanted}" was requested but could not be initialised on this machine`);
    selected = info;
    return info;
  }
  for (const choice of BACKEND_PREFERENCE) {
    const info = await tryBackend(choice, options);
    if (info) {
      selected = info;
      return info;
    }
  }
  throw new Error('backend: no TensorFlow.js backend could be initialised');
}

/** The backend chosen by selectBackend(), or undefined before it ran. */
export function currentBackend(): BackendInfo | undefined {
  return selected;
}
