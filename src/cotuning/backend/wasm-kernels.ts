import { readFileSync } from 'node:fs';
import * as tf from '@tensorflow/tfjs';

/**
 * Our own WASM SIMD kernels (kernels.wat), running inside the TF.js WASM backend's memory so
 * that they read and write its tensors in place. They cover gradients that XNNPACK has no
 * fast form for; everything else stays with the backend's kernels.
 */

type TensorInfo = tf.TensorInfo;

/** The part of the WebAssembly API used here (@types/node 20 does not declare it). */
interface WebAssemblyApi {
  Memory: abstract new (...args: never[]) => { buffer: ArrayBuffer | SharedArrayBuffer };
  validate(binary: Uint8Array): boolean;
  instantiate(binary: Uint8Array, imports: object): Promise<{ instance: { exports: object } }>;
}
const WebAssembly = (globalThis as unknown as { WebAssembly: WebAssemblyApi }).WebAssembly;

/** The parts of tfjs-backend-wasm's BackendWasm that the kernels need (not in its public types). */
interface WasmBackendInternals {
  /** The single-threaded build exports its memory; the threaded one imports it (wasmMemory). */
  wasm: { asm: { memory?: object }; wasmMemory?: object };
  dataIdMap: { get(dataId: object): { memoryOffset: number } | undefined };
  makeOutput(shape: number[], dtype: 'float32'): TensorInfo;
}

interface KernelExports {
  depthwiseFilterGrad(
    x: number, dy: number, out: number,
    n: number, h: number, w: number, c: number,
    ho: number, wo: number, kh: number, kw: number,
    sh: number, sw: number, dh: number, dw: number,
    pt: number, pl: number,
  ): void;
  relu6Grad(dy: number, x: number, out: number, count: number): void;
  channelOp(mode: number, u: number, x: number, out: number, pixels: number, c: number, a: number, b: number, cc: number): void;
}

export interface WasmKernels {
  /** dW of a depth-multiplier-1 depthwise convolution, as a [kh, kw, c, 1] tensor. */
  depthwiseFilterGrad(x: TensorInfo, dy: TensorInfo, c: tf.backend_util.Conv2DInfo): TensorInfo;
  /** dy where 0 < x < 6, else 0. */
  relu6Grad(dy: TensorInfo, x: TensorInfo): TensorInfo;
  /** u·a + x·b + c per channel (last axis); a, b, c are [C]. */
  channelAffine2(u: TensorInfo, a: TensorInfo, x: TensorInfo, b: TensorInfo, c: TensorInfo): TensorInfo;
  /** (u − mu)·(x − m) per channel (last axis); mu, m are [C]. */
  centredProduct(u: TensorInfo, mu: TensorInfo, x: TensorInfo, m: TensorInfo): TensorInfo;
}

const loaded = new WeakMap<object, WasmKernels>();

const sizeOf = (t: TensorInfo): number => t.shape.reduce((a, b) => a * b, 1);

/** Channel count (last axis) of x, checked against the [C] vectors and same-shape tensors. */
function channels(x: TensorInfo, others: TensorInfo[]): number {
  const c = x.shape[x.shape.length - 1];
  for (const t of others) {
    const ok = t.shape.length === 1 ? t.shape[0] === c : sizeOf(t) === sizeOf(x);
    if (!ok || t.dtype !== 'float32') throw new Error(`wasm kernels: shape [${t.shape}] does not fit [${x.shape}]`);
  }
  return c;
}

const MEMORY_IMPORT = '(import "tfjs" "memory" (memory 1))';
/** A shared memory import needs a maximum: the wasm32 limit admits whatever the backend chose. */
const SHARED_MEMORY_IMPORT = '(import "tfjs" "memory" (memory 1 65536 shared))';

/**
 * Source is assembled at start-up (a few ms) so the repository holds only readable text. With
 * WASM threads the backend's memory is shared, and an import must declare the same sharing.
 */
async function assemble(sharedMemory: boolean): Promise<Uint8Array> {
  let source = readFileSync(new URL('./kernels.wat', import.meta.url), 'utf8');
  if (!source.includes(MEMORY_IMPORT)) throw new Error(`wasm kernels: kernels.wat must import ${MEMORY_IMPORT}`);
  if (sharedMemory) source = source.replace(MEMORY_IMPORT, SHARED_MEMORY_IMPORT);
  // Loaded here, not at the top: native backends never need the assembler.
  const { default: wabt } = await import('wabt');
  const features = { simd: true, bulk_memory: true, threads: sharedMemory };
  const module = (await wabt()).parseWat('kernels.wat', source, features);
  try {
    // wabt's typings omit validate's features argument; without it a shared memory is rejected.
    (module as unknown as { validate(features: object): void }).validate(features);
    return module.toBinary({}).buffer;
  } finally {
    module.destroy();
  }
}

/**
 * Instantiates the kernels against `backend`'s memory. Returns false (and the callers keep
 * their composite versions) when the backend is not WASM or the runtime lacks WASM SIMD.
 */
export async function loadWasmKernels(backend: tf.KernelBackend): Promise<boolean> {
  if (loaded.has(backend)) return true;
  const internals = backend as unknown as WasmBackendInternals;
  const memory = internals.wasm?.asm?.memory ?? internals.wasm?.wasmMemory;
  if (!(memory instanceof WebAssembly.Memory)) return false;
  const binary = await assemble(memory.buffer instanceof SharedArrayBuffer);
  if (!WebAssembly.validate(binary)) return false;
  const { instance } = await WebAssembly.instantiate(binary, { tfjs: { memory } });
  const exports = instance.exports as unknown as KernelExports;

  const offset = (t: TensorInfo): number => {
    const data = internals.dataIdMap.get(t.dataId);
    if (!data) throw new Error('wasm kernels: tensor is not on the WASM backend');
    return data.memoryOffset;
  };

  loaded.set(backend, {
    depthwiseFilterGrad(x, dy, c) {
      const out = internals.makeOutput([c.filterHeight, c.filterWidth, c.inChannels, 1], 'float32');
      exports.depthwiseFilterGrad(
        offset(x), offset(dy), offset(out),
        c.batchSize, c.inHeight, c.inWidth, c.inChannels,
        c.outHeight, c.outWidth, c.filterHeight, c.filterWidth,
        c.strideHeight, c.strideWidth, c.dilationHeight, c.dilationWidth,
        c.padInfo.top, c.padInfo.left,
      );
      return out;
    },
    relu6Grad(dy, x) {
      channels(x, [dy]);
      const out = internals.makeOutput([...x.shape], 'float32');
      exports.relu6Grad(offset(dy), offset(x), offset(out), sizeOf(x));
      return out;
    },
    channelAffine2(u, a, x, b, c) {
      const out = internals.makeOutput([...x.shape], 'float32');
      const ch = channels(x, [u, a, b, c]);
      exports.channelOp(0, offset(u), offset(x), offset(out), sizeOf(x) / ch, ch, offset(a), offset(b), offset(c));
      return out;
    },
    centredProduct(u, mu, x, m) {
      const out = internals.makeOutput([...x.shape], 'float32');
      const ch = channels(x, [u, mu, m]);
      exports.channelOp(1, offset(u), offset(x), offset(out), sizeOf(x) / ch, ch, offset(mu), offset(m), 0);
      return out;
    },
  });
  return true;
}

/** The kernels loaded for `backend`, if any. */
export function wasmKernels(backend: tf.KernelBackend): WasmKernels | undefined {
  return loaded.get(backend);
}
