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
  disposeData(dataId: object): boolean;
}

/** Sizes of a convolution or pooling window as the kernels take them (see kernels.wat). */
type Geometry = [
  n: number, h: number, w: number, c: number,
  ho: number, wo: number, kh: number, kw: number,
  sh: number, sw: number, dh: number, dw: number,
  pt: number, pl: number,
];

const geometry = (c: tf.backend_util.Conv2DInfo): Geometry => [
  c.batchSize, c.inHeight, c.inWidth, c.inChannels,
  c.outHeight, c.outWidth, c.filterHeight, c.filterWidth,
  c.strideHeight, c.strideWidth, c.dilationHeight, c.dilationWidth,
  c.padInfo.top, c.padInfo.left,
];

interface KernelExports {
  depthwiseFilterGrad(x: number, dy: number, out: number, ...geometry: Geometry): void;
  depthwiseInputGrad(dy: number, w: number, dx: number, ...geometry: Geometry): void;
  matMulTransposedA(x: number, dy: number, out: number, m: number, ci: number, co: number, rows: number): void;
  convFilterGrad(x: number, dy: number, out: number, patches: number, acc: number, ...geometryAndBlocks: [...Geometry, number, number, number]): void;
  maxPoolGrad(x: number, dy: number, dx: number, ...geometry: Geometry): void;
  relu6Grad(dy: number, x: number, out: number, count: number): void;
  nesterovUpdate(theta: number, v: number, grad: number, outTheta: number, outV: number, count: number, lr: number, mu: number, wd: number, first: number): void;
  channelAffine2(u: number, x: number, out: number, pixels: number, c: number, a: number, b: number, cc: number): void;
  channelSums(
    mode: number, u: number, x: number, m: number, pixels: number, c: number,
    out1: number, out2: number, acc: number, block: number, scale: number,
  ): void;
}

export interface WasmKernels {
  /** dW of a depth-multiplier-1 depthwise convolution, as a [kh, kw, c, 1] tensor. */
  depthwiseFilterGrad(x: TensorInfo, dy: TensorInfo, c: tf.backend_util.Conv2DInfo): TensorInfo;
  /** dx of a depth-multiplier-1 depthwise convolution (filter [kh, kw, c, 1]). */
  depthwiseInputGrad(dy: TensorInfo, filter: TensorInfo, c: tf.backend_util.Conv2DInfo): TensorInfo;
  /**
   * xᵀ·dy [ci, co] over the rows of x [.., ci] and dy [.., co] (the filter gradient of a 1x1
   * stride-1 convolution), when ci is a multiple of 4 and co of 8; undefined otherwise.
   */
  matMulTransposedA(x: TensorInfo, dy: TensorInfo): TensorInfo | undefined;
  /** dW [kh, kw, ci, co] of any NHWC convolution when co is a multiple of 8; undefined otherwise. */
  convFilterGrad(x: TensorInfo, dy: TensorInfo, c: tf.backend_util.Conv2DInfo): TensorInfo | undefined;
  /** dx of a max pool: each dy value goes to its window's first maximum in x. */
  maxPoolGrad(x: TensorInfo, dy: TensorInfo, p: tf.backend_util.Conv2DInfo): TensorInfo;
  /** dy where 0 < x < 6, else 0. */
  relu6Grad(dy: TensorInfo, x: TensorInfo): TensorInfo;
  /** One Nesterov-SGD step: [θ', v'] from θ, v (null on the first step) and the gradient. */
  nesterovUpdate(theta: TensorInfo, v: TensorInfo | null, grad: TensorInfo, lr: number, mu: number, wd: number): [TensorInfo, TensorInfo];
  /** u·a + x·b + c per channel (last axis); a, b, c are [C]. */
  channelAffine2(u: TensorInfo, a: TensorInfo, x: TensorInfo, b: TensorInfo, c: TensorInfo): TensorInfo;
  /** Per-channel mean and biased variance over every axis but the last: two [C] tensors. */
  channelMoments(x: TensorInfo): [TensorInfo, TensorInfo];
  /** Per-channel Σ dy and Σ dy·(x − mean) over every axis but the last: two [C] tensors. */
  channelGradSums(dy: TensorInfo, x: TensorInfo, mean: TensorInfo): [TensorInfo, TensorInfo];
  /**
   * Arithmetic on [C] vectors in JS, straight on the backend's memory: `count` new [C] tensors
   * filled by `body` from the inputs. A few hundred tiny kernels per step otherwise (each a
   * dispatch, and with WASM threads a wake-up of the thread pool).
   */
  perChannel(inputs: TensorInfo[], count: number, body: (ins: Float32Array[], outs: Float32Array[]) => void): TensorInfo[];
}

const loaded = new WeakMap<object, WasmKernels>();

/** Pixels summed per block before joining the totals in channelSums (see kernels.wat). */
const SUM_BLOCK = 256;

/** Rows per block of a filter gradient: both operands' rows of a block fit in about 32 KiB (L1). */
const l1Rows = (ci: number, co: number): number => Math.max(8, Math.floor(32768 / ((ci + co) * 4)));

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

  /** A view of t's data; valid until the next allocation in the backend (the heap may grow). */
  const view = (t: TensorInfo): Float32Array => new Float32Array(memory.buffer, offset(t), sizeOf(t));

  /** Runs `body` with `floats` of scratch memory in the backend's heap. */
  const withScratch = (floats: number, body: (at: number) => void): void => {
    const scratch = internals.makeOutput([floats], 'float32');
    try {
      body(offset(scratch));
    } finally {
      internals.disposeData(scratch.dataId);
    }
  };

  loaded.set(backend, {
    perChannel(inputs, count, body) {
      const c = inputs[0].shape[0];
      for (const t of inputs) {
        if (t.shape.length !== 1 || t.shape[0] !== c || t.dtype !== 'float32') throw new Error(`wasm kernels: [${t.shape}] is not a [${c}] vector`);
      }
      const outs = Array.from({ length: count }, () => internals.makeOutput([c], 'float32'));
      body(inputs.map(view), outs.map(view));
      return outs;
    },
    depthwiseFilterGrad(x, dy, c) {
      const out = internals.makeOutput([c.filterHeight, c.filterWidth, c.inChannels, 1], 'float32');
      exports.depthwiseFilterGrad(offset(x), offset(dy), offset(out), ...geometry(c));
      return out;
    },
    depthwiseInputGrad(dy, filter, c) {
      const dx = internals.makeOutput([c.batchSize, c.inHeight, c.inWidth, c.inChannels], 'float32');
      exports.depthwiseInputGrad(offset(dy), offset(filter), offset(dx), ...geometry(c));
      return dx;
    },
    matMulTransposedA(x, dy) {
      const ci = x.shape[x.shape.length - 1];
      const co = dy.shape[dy.shape.length - 1];
      if (ci % 4 !== 0 || co % 8 !== 0 || x.dtype !== 'float32' || dy.dtype !== 'float32') return undefined;
      const m = sizeOf(x) / ci;
      if (sizeOf(dy) !== m * co) throw new Error(`wasm kernels: dy [${dy.shape}] does not fit x [${x.shape}]`);
      const out = internals.makeOutput([ci, co], 'float32');
      exports.matMulTransposedA(offset(x), offset(dy), offset(out), m, ci, co, l1Rows(ci, co));
      return out;
    },
    convFilterGrad(x, dy, c) {
      const co = c.outChannels;
      if (co % 8 !== 0 || x.dtype !== 'float32' || dy.dtype !== 'float32') return undefined;
      const taps = c.filterHeight * c.filterWidth * c.inChannels;
      const kp = Math.ceil(taps / 4) * 4;
      const rows = l1Rows(kp, co);
      const out = internals.makeOutput([c.filterHeight, c.filterWidth, c.inChannels, co], 'float32');
      withScratch(rows * kp + kp * co, (patches) => {
        exports.convFilterGrad(offset(x), offset(dy), offset(out), patches, patches + rows * kp * 4, ...geometry(c), kp, co, rows);
      });
      return out;
    },
    maxPoolGrad(x, dy, p) {
      const dx = internals.makeOutput([...x.shape], 'float32');
      exports.maxPoolGrad(offset(x), offset(dy), offset(dx), ...geometry(p));
      return dx;
    },
    relu6Grad(dy, x) {
      channels(x, [dy]);
      const out = internals.makeOutput([...x.shape], 'float32');
      exports.relu6Grad(offset(dy), offset(x), offset(out), sizeOf(x));
      return out;
    },
    nesterovUpdate(theta, v, grad, lr, mu, wd) {
      const n = sizeOf(theta);
      for (const t of [grad, ...(v ? [v] : [])]) {
        if (sizeOf(t) !== n || t.dtype !== 'float32') throw new Error(`wasm kernels: shape [${t.shape}] does not fit [${theta.shape}]`);
      }
      const outTheta = internals.makeOutput([...theta.shape], 'float32');
      const outV = internals.makeOutput([...theta.shape], 'float32');
      exports.nesterovUpdate(offset(theta), v ? offset(v) : 0, offset(grad), offset(outTheta), offset(outV), n, lr, mu, wd, v ? 0 : 1);
      return [outTheta, outV];
    },
    channelAffine2(u, a, x, b, c) {
      const out = internals.makeOutput([...x.shape], 'float32');
      const ch = channels(x, [u, a, b, c]);
      exports.channelAffine2(offset(u), offset(x), offset(out), sizeOf(x) / ch, ch, offset(a), offset(b), offset(c));
      return out;
    },
    channelMoments(x) {
      const c = channels(x, []);
      const pixels = sizeOf(x) / c;
      const [mean, variance] = [internals.makeOutput([c], 'float32'), internals.makeOutput([c], 'float32')];
      withScratch(2 * c, (acc) => {
        exports.channelSums(0, offset(x), 0, 0, pixels, c, offset(mean), 0, acc, SUM_BLOCK, 1 / pixels);
        exports.channelSums(1, offset(x), 0, offset(mean), pixels, c, offset(variance), 0, acc, SUM_BLOCK, 1 / pixels);
      });
      return [mean, variance];
    },
    channelGradSums(dy, x, mean) {
      const c = channels(x, [dy, mean]);
      const [sumDy, sumDyXc] = [internals.makeOutput([c], 'float32'), internals.makeOutput([c], 'float32')];
      withScratch(2 * c, (acc) => {
        exports.channelSums(2, offset(dy), offset(x), offset(mean), sizeOf(x) / c, c, offset(sumDy), offset(sumDyXc), acc, SUM_BLOCK, 1);
      });
      return [sumDy, sumDyXc];
    },
  });
  return true;
}

/** The kernels loaded for `backend`, if any. */
export function wasmKernels(backend: tf.KernelBackend): WasmKernels | undefined {
  return loaded.get(backend);
}
