import { readFileSync } from 'node:fs';
import * as tf from '@tensorflow/tfjs';
import { getThreadsCount } from '@tensorflow/tfjs-backend-wasm';
import { MAX_CHUNKS, startKernelThreads } from './kernel-threads.js';
import { fusedMultiplyAddAvailable, fuseMultiplyAdds } from './wasm-fma.js';

/**
 * Our own WASM SIMD kernels (kernels.wat), running inside the TF.js WASM backend's memory so
 * that they read and write its tensors in place. They cover gradients that XNNPACK has no
 * fast form for; everything else stays with the backend's kernels. With WASM threads, a large
 * call is cut into chunks that run on helper threads as well (kernel-threads.ts).
 */

type TensorInfo = tf.TensorInfo;

/** The part of the WebAssembly API used here (@types/node 20 does not declare it). */
interface WebAssemblyApi {
  Memory: abstract new (...args: never[]) => { buffer: ArrayBuffer | SharedArrayBuffer };
  validate(binary: Uint8Array): boolean;
  compile(binary: Uint8Array): Promise<object>;
  instantiate(module: object, imports: object): Promise<{ exports: Record<string, (...args: number[]) => void> }>;
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
  matMulTransposedA(x: number, dy: number, out: number, m: number, ci: number, co: number, rows: number, xRow: number): void;
  matMulTransposedB(a: number, b: number, out: number, m: number, n: number, k: number, outRow: number): void;
  matMul(a: number, b: number, out: number, m: number, k: number, n: number): void;
  convFilterGrad(x: number, dy: number, out: number, patches: number, acc: number, ...geometryAndBlocks: [...Geometry, number, number, number]): void;
  maxPoolGrad(x: number, dy: number, dx: number, ...geometry: Geometry): void;
  relu6Grad(dy: number, x: number, out: number, count: number): void;
  nesterovUpdate(theta: number, v: number, grad: number, outTheta: number, outV: number, count: number, lr: number, mu: number, wd: number, first: number): void;
  channelAffine2(u: number, x: number, out: number, pixels: number, c: number, a: number, b: number, cc: number, y: number): void;
  channelSums(
    mode: number, u: number, x: number, m: number, pixels: number, c: number,
    out1: number, out2: number, acc: number, block: number, scale: number, y: number,
  ): void;
  channelSumsNarrow: KernelExports['channelSums'];
  addInto(dst: number, src: number, count: number): void;
  softCrossEntropyRows(z: number, p: number, t: number, grad: number, out: number, b: number, n: number, invB: number): void;
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
  /** a·bᵀ [m, n] of a [m, k] and b [n, k], when m is a multiple of 4, n of 2 and k of 4; undefined otherwise. */
  matMulTransposedB(a: TensorInfo, b: TensorInfo): TensorInfo | undefined;
  /**
   * a·b [m, n] of a [m, k] and b [k, n] as they lie in memory, when n is a multiple of 8 and b
   * fits in L2 (MATMUL_MAX_B_FLOATS); undefined otherwise.
   */
  matMul(a: TensorInfo, b: TensorInfo): TensorInfo | undefined;
  /** dW [kh, kw, ci, co] of any NHWC convolution when co is a multiple of 8; undefined otherwise. */
  convFilterGrad(x: TensorInfo, dy: TensorInfo, c: tf.backend_util.Conv2DInfo): TensorInfo | undefined;
  /** dx of a max pool: each dy value goes to its window's first maximum in x. */
  maxPoolGrad(x: TensorInfo, dy: TensorInfo, p: tf.backend_util.Conv2DInfo): TensorInfo;
  /** dy where 0 < x < 6, else 0. */
  relu6Grad(dy: TensorInfo, x: TensorInfo): TensorInfo;
  /** One Nesterov-SGD step: [θ', v'] from θ, v (null on the first step) and the gradient. */
  nesterovUpdate(theta: TensorInfo, v: TensorInfo | null, grad: TensorInfo, lr: number, mu: number, wd: number): [TensorInfo, TensorInfo];
  /** u·a + x·b + c per channel (last axis); a, b, c are [C]. With y, u counts only where 0 < y < 6 (ReLU6 mask). */
  channelAffine2(u: TensorInfo, a: TensorInfo, x: TensorInfo, b: TensorInfo, c: TensorInfo, y?: TensorInfo): TensorInfo;
  /**
   * Soft-label cross-entropy of logits [B, N] given their softmax and the targets: the loss (a
   * scalar) and its gradient [B, N] (see cross-entropy.ts), when N is a multiple of 4; undefined otherwise.
   */
  softCrossEntropy(logits: TensorInfo, probs: TensorInfo, targets: TensorInfo): [TensorInfo, TensorInfo] | undefined;
  /** Per-channel sum over every axis but the last: a [C] tensor. */
  channelTotals(x: TensorInfo): TensorInfo;
  /** Per-channel mean and biased variance over every axis but the last: two [C] tensors. */
  channelMoments(x: TensorInfo): [TensorInfo, TensorInfo];
  /** Per-channel Σ dy and Σ dy·(x − mean) over every axis but the last: two [C] tensors. With y, dy counts only where 0 < y < 6. */
  channelGradSums(dy: TensorInfo, x: TensorInfo, mean: TensorInfo, y?: TensorInfo): [TensorInfo, TensorInfo];
  /**
   * Arithmetic on [C] vectors in JS, straight on the backend's memory: `count` new [C] tensors
   * filled by `body` from the inputs. A few hundred tiny kernels per step otherwise (each a
   * dispatch, and with WASM threads a wake-up of the thread pool).
   */
  perChannel(inputs: TensorInfo[], count: number, body: (ins: Float32Array[], outs: Float32Array[]) => void): TensorInfo[];
  /** As perChannel, for small float32 tensors of any shape: new tensors of `shapes` filled by `body`. */
  inJs(inputs: TensorInfo[], shapes: number[][], body: (ins: Float32Array[], outs: Float32Array[]) => void): TensorInfo[];
  /** Threads our kernels run on (1, or as many as XNNPACK's), and how they have been used: calls in chunks per kernel (and way of cutting). */
  threadUse(): { threads: number; chunkedCalls: Record<string, number>; helperChunks: number };
  /** Whether the kernels were assembled with relaxed SIMD's fused multiply-add (wasm-fma.ts). */
  fusedMultiplyAdd(): boolean;
}

const loaded = new WeakMap<object, WasmKernels>();

/**
 * Pixels averaged for the shift of the one-pass batch statistics (channelMoments). The average
 * runs in JS, once per batch norm: 256 samples cost 0.15 ms at 256 channels (about 1.5 ms of a
 * 96-px training step), 32 cost 15 µs and still keep an outlier from moving the shift by more
 * than 1/32 of its distance.
 */
const SHIFT_SAMPLES = 32;
/** Pixels summed per block before joining the totals in channelSums (see kernels.wat). */
const SUM_BLOCK = 256;
/** Channel counts up to which the per-channel sums keep their totals in registers (channelSumsNarrow). */
const NARROW_CHANNELS = 32;
/** The per-channel sums kernel for `c` channels. */
const channelSumsKernel = (c: number): 'channelSums' | 'channelSumsNarrow' =>
  c % 4 === 0 && c <= NARROW_CHANNELS ? 'channelSumsNarrow' : 'channelSums';

/**
 * With WASM threads, the smallest chunk (in floats read and written) a kernel call is cut into
 * (see kernel-threads.ts): handing a chunk over costs about what a few µs of kernel work does.
 * This and CHUNKS_PER_THREAD were picked by timing whole MobileNet training steps on 2 threads.
 */
const MIN_CHUNK_FLOATS = 16384;
/** Floats in a 64-byte cache line. */
const CACHE_LINE_FLOATS = 16;
/** Chunks per thread in a call cut into chunks (see KernelThreads). */
const CHUNKS_PER_THREAD = 8;
/** A chunk of a sum must cover this many times the floats of its partial result. */
const PARTIAL_COST = 16;
/** Multiply-adds of matMulTransposedA that take about as long as streaming one float. */
const MACS_PER_FLOAT = 2;

/** [start, count] of one chunk of a range. */
type Range = [start: number, count: number];

/** [0, total) cut into `parts` nearly equal ranges whose starts are multiples of `align`. */
function splitRange(total: number, parts: number, align = 1): Range[] {
  const units = Math.ceil(total / align);
  const n = Math.max(1, Math.min(parts, units));
  const ranges: Range[] = [];
  for (let p = 0, start = 0; p < n; p++) {
    const end = p === n - 1 ? total : Math.round(((p + 1) * units) / n) * align;
    ranges.push([start, end - start]);
    start = end;
  }
  return ranges;
}

/** Rows per block of a filter gradient: both operands' rows of a block fit in about 32 KiB (L1). */
const l1Rows = (ci: number, co: number): number => Math.max(8, Math.floor(32768 / ((ci + co) * 4)));

/**
 * Largest b of matMul, in floats (1 MB): every 4 rows of a stream all of b, which must stay in
 * L2. Measured on 2 threads: a 256x1024 b is 25-30 % faster than XNNPACK, a 1024x512 one 40 % slower.
 */
const MATMUL_MAX_B_FLOATS = 262144;

/** Rows of matMulTransposedA up to which they form one block (a batch of head features; filter gradients have hundreds). */
const ONE_BLOCK_ROWS = 64;

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
async function assemble(sharedMemory: boolean, fusedMultiplyAdd: boolean): Promise<Uint8Array> {
  let source = readFileSync(new URL('./kernels.wat', import.meta.url), 'utf8');
  if (!source.includes(MEMORY_IMPORT)) throw new Error(`wasm kernels: kernels.wat must import ${MEMORY_IMPORT}`);
  if (sharedMemory) source = source.replace(MEMORY_IMPORT, SHARED_MEMORY_IMPORT);
  if (fusedMultiplyAdd) source = fuseMultiplyAdds(source).source;
  // Loaded here, not at the top: native backends never need the assembler.
  const { default: wabt } = await import('wabt');
  const features = { simd: true, bulk_memory: true, threads: sharedMemory, relaxed_simd: fusedMultiplyAdd };
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
  const shared = memory.buffer instanceof SharedArrayBuffer;
  let fusedMultiplyAdd = fusedMultiplyAddAvailable();
  let binary = await assemble(shared, fusedMultiplyAdd);
  if (fusedMultiplyAdd && !WebAssembly.validate(binary)) {
    fusedMultiplyAdd = false;
    binary = await assemble(shared, false);
  }
  if (!WebAssembly.validate(binary)) return false;
  const module = await WebAssembly.compile(binary);
  const instance = await WebAssembly.instantiate(module, { tfjs: { memory } });
  const exports = instance.exports as unknown as KernelExports;
  // As many threads as XNNPACK has: the calling thread and getThreadsCount() − 1 helpers.
  const threads =
    shared && getThreadsCount() > 1 ? startKernelThreads(module, memory, instance.exports, getThreadsCount() - 1) : undefined;

  const offset = (t: TensorInfo): number => {
    const data = internals.dataIdMap.get(t.dataId);
    if (!data) throw new Error('wasm kernels: tensor is not on the WASM backend');
    return data.memoryOffset;
  };

  /** A view of t's data; valid until the next allocation in the backend (the heap may grow). */
  const view = (t: TensorInfo): Float32Array => new Float32Array(memory.buffer, offset(t), sizeOf(t));

  /** Runs `body` with `floats` of scratch memory in the backend's heap. */
  const withScratch = (floats: number, body: (at: number) => void): void => {
    const scratch = internals.makeOutput([Math.max(1, floats)], 'float32');
    try {
      body(offset(scratch));
    } finally {
      internals.disposeData(scratch.dataId);
    }
  };

  /**
   * [0, total) cut into the chunks of a call over `floats` of data, with starts at multiples of
   * `align`: a few chunks per thread, so that a thread slowed down runs fewer of them, and none
   * below MIN_CHUNK_FLOATS. A chunk of a sum costs a `partial`-float partial result, which must
   * stay small next to its share of the work. One range without helper threads.
   */
  const chunkRanges = (total: number, floats: number, align = 1, partial = 0): Range[] => {
    if (!threads) return [[0, total]];
    const bySize = Math.floor(floats / Math.max(MIN_CHUNK_FLOATS, PARTIAL_COST * partial));
    return splitRange(total, Math.min(threads.threads * CHUNKS_PER_THREAD, MAX_CHUNKS, bySize), align);
  };

  const chunkedCalls: Record<string, number> = {};
  /**
   * Runs kernel `name` once per argument list: on the helper threads too when there are several.
   * Calls in chunks are counted under `label`.
   */
  const run = (name: keyof KernelExports, args: number[][], label: string = name): void => {
    if (threads && args.length > 1) {
      chunkedCalls[label] = (chunkedCalls[label] ?? 0) + 1;
      threads.run(name, args);
    } else (exports[name] as (...a: number[]) => void)(...args[0]);
  };

  /**
   * A sum cut into chunks (`ranges`). Chunk 0 writes the `size`-float results `outs`; every
   * other chunk writes its own copies in scratch, added into `outs` at the end. Each chunk also
   * gets `extra` floats of working scratch. Every chunk's scratch starts on its own cache line:
   * chunks on different threads that wrote to one line would slow each other down.
   * `args(range, chunkOuts, chunkScratch)` are a chunk's kernel arguments.
   */
  const runSum = (
    name: keyof KernelExports,
    ranges: Range[],
    outs: number[],
    size: number,
    extra: number,
    args: (range: Range, chunkOuts: number[], chunkScratch: number) => number[],
  ): void => {
    const chunks = ranges.length;
    if (chunks === 1 && extra === 0) return run(name, [args(ranges[0], outs, 0)]);
    const line = (floats: number): number => Math.ceil(floats / CACHE_LINE_FLOATS) * CACHE_LINE_FLOATS;
    const stride = line(outs.length * size) + line(extra);
    withScratch(chunks * stride + CACHE_LINE_FLOATS, (at) => {
      const base = Math.ceil(at / (CACHE_LINE_FLOATS * 4)) * CACHE_LINE_FLOATS * 4;
      const chunkOuts = (p: number): number[] => (p === 0 ? outs : outs.map((_, i) => base + (p * stride + i * size) * 4));
      const chunkScratch = (p: number): number => base + (p * stride + line(outs.length * size)) * 4;
      run(name, ranges.map((r, p) => args(r, chunkOuts(p), chunkScratch(p))));
      for (let p = 1; p < chunks; p++) chunkOuts(p).forEach((partial, i) => exports.addInto(outs[i], partial, size));
    });
  };

  /** A kernel over a batch of images, cut into ranges of images when the batch is large enough. */
  const imageRanges = (g: Geometry, floatsPerImage: number, partial = 0): Range[] =>
    chunkRanges(g[0], g[0] * floatsPerImage, 1, partial);
  /** The geometry of a part of the batch: `count` of its images. */
  const withImages = (g: Geometry, [, count]: Range): Geometry => {
    const part: Geometry = [...g];
    part[0] = count;
    return part;
  };

  const inJs: WasmKernels['inJs'] = (inputs, shapes, body) => {
    for (const t of inputs) if (t.dtype !== 'float32') throw new Error(`wasm kernels: a ${t.dtype} tensor is not float32`);
    // Every output first: an allocation may grow the heap, which invalidates views.
    const outs = shapes.map((shape) => internals.makeOutput(shape, 'float32'));
    body(inputs.map(view), outs.map(view));
    return outs;
  };

  loaded.set(backend, {
    threadUse: () => ({ threads: threads?.threads ?? 1, chunkedCalls: { ...chunkedCalls }, helperChunks: threads?.helperChunks() ?? 0 }),
    fusedMultiplyAdd: () => fusedMultiplyAdd,
    perChannel(inputs, count, body) {
      const c = inputs[0].shape[0];
      for (const t of inputs) {
        if (t.shape.length !== 1 || t.shape[0] !== c || t.dtype !== 'float32') throw new Error(`wasm kernels: [${t.shape}] is not a [${c}] vector`);
      }
      return inJs(inputs, Array.from({ length: count }, () => [c]), body);
    },
    inJs,
    depthwiseFilterGrad(x, dy, c) {
      const out = internals.makeOutput([c.filterHeight, c.filterWidth, c.inChannels, 1], 'float32');
      const g = geometry(c);
      const [xImage, dyImage] = [c.inHeight * c.inWidth * c.inChannels * 4, c.outHeight * c.outWidth * c.inChannels * 4];
      const size = c.filterHeight * c.filterWidth * c.inChannels;
      runSum('depthwiseFilterGrad', imageRanges(g, (xImage + dyImage) / 4, size), [offset(out)], size, 0, (r, [chunkOut]) => [
        offset(x) + r[0] * xImage, offset(dy) + r[0] * dyImage, chunkOut, ...withImages(g, r),
      ]);
      return out;
    },
    depthwiseInputGrad(dy, filter, c) {
      const dx = internals.makeOutput([c.batchSize, c.inHeight, c.inWidth, c.inChannels], 'float32');
      const g = geometry(c);
      const [dxImage, dyImage] = [c.inHeight * c.inWidth * c.inChannels * 4, c.outHeight * c.outWidth * c.inChannels * 4];
      run('depthwiseInputGrad', imageRanges(g, (dxImage + dyImage) / 4).map((r) => [
        offset(dy) + r[0] * dyImage, offset(filter), offset(dx) + r[0] * dxImage, ...withImages(g, r),
      ]));
      return dx;
    },
    matMulTransposedA(x, dy) {
      const ci = x.shape[x.shape.length - 1];
      const co = dy.shape[dy.shape.length - 1];
      if (ci % 4 !== 0 || co % 8 !== 0 || x.dtype !== 'float32' || dy.dtype !== 'float32') return undefined;
      const m = sizeOf(x) / ci;
      if (sizeOf(dy) !== m * co) throw new Error(`wasm kernels: dy [${dy.shape}] does not fit x [${x.shape}]`);
      const out = internals.makeOutput([ci, co], 'float32');
      // A few rows (a head's weight gradient fᵀ·dz over one batch) go in one block, so that out
      // is written once rather than read and rewritten per block: 1 MB for 256x1000.
      const rows = m <= ONE_BLOCK_ROWS ? Math.max(m, 1) : l1Rows(ci, co);
      // Chunks of rows (whole L1 blocks) each add up a partial [ci, co]; chunks of x's channels
      // each write their own rows of out, in the same order of sums as uncut. Rows suit many
      // rows and few channels (early layers), channels the reverse, where a partial result
      // would cost as much as the chunk's work.
      const byRows = chunkRanges(m, m * (ci + co), rows, ci * co);
      const byChannels = chunkRanges(ci, (m * ci * co) / MACS_PER_FLOAT, 4);
      if (byChannels.length > byRows.length) {
        const chunks = byChannels.map(([start, count]) => [offset(x) + start * 4, offset(dy), offset(out) + start * co * 4, m, count, co, rows, ci]);
        run('matMulTransposedA', chunks, 'matMulTransposedA by channels');
        return out;
      }
      runSum('matMulTransposedA', byRows, [offset(out)], ci * co, 0, ([start, count], [chunkOut]) => [
        offset(x) + start * ci * 4, offset(dy) + start * co * 4, chunkOut, count, ci, co, rows, ci,
      ]);
      return out;
    },
    matMulTransposedB(a, b) {
      const [m, k] = a.shape;
      const [n, kb] = b.shape;
      if (a.shape.length !== 2 || b.shape.length !== 2 || k !== kb || m % 4 !== 0 || n % 2 !== 0 || k % 4 !== 0) return undefined;
      if (a.dtype !== 'float32' || b.dtype !== 'float32') return undefined;
      const out = internals.makeOutput([m, n], 'float32');
      // Chunks of b's rows, each writing its own columns of out.
      const chunks = chunkRanges(n, (m * n * k) / MACS_PER_FLOAT, 2).map(([start, count]) => [
        offset(a), offset(b) + start * k * 4, offset(out) + start * 4, m, count, k, n,
      ]);
      run('matMulTransposedB', chunks);
      return out;
    },
    matMul(a, b) {
      const [m, k] = a.shape;
      const [kb, n] = b.shape;
      if (a.shape.length !== 2 || b.shape.length !== 2 || k !== kb || n % 8 !== 0 || k * n > MATMUL_MAX_B_FLOATS) return undefined;
      if (a.dtype !== 'float32' || b.dtype !== 'float32') return undefined;
      const out = internals.makeOutput([m, n], 'float32');
      // Chunks of a's rows, each writing its own rows of out.
      const chunks = chunkRanges(m, (m * n * k) / MACS_PER_FLOAT, 4).map(([start, count]) => [
        offset(a) + start * k * 4, offset(b), offset(out) + start * n * 4, count, k, n,
      ]);
      run('matMul', chunks);
      return out;
    },
    convFilterGrad(x, dy, c) {
      const co = c.outChannels;
      if (co % 8 !== 0 || x.dtype !== 'float32' || dy.dtype !== 'float32') return undefined;
      const taps = c.filterHeight * c.filterWidth * c.inChannels;
      const kp = Math.ceil(taps / 4) * 4;
      const rows = l1Rows(kp, co);
      const out = internals.makeOutput([c.filterHeight, c.filterWidth, c.inChannels, co], 'float32');
      const g = geometry(c);
      const [xImage, dyImage] = [c.inHeight * c.inWidth * c.inChannels * 4, c.outHeight * c.outWidth * co * 4];
      const work = rows * kp + kp * co;
      runSum('convFilterGrad', imageRanges(g, (xImage + dyImage) / 4, taps * co), [offset(out)], taps * co, work, (r, [chunkOut], patches) => [
        offset(x) + r[0] * xImage, offset(dy) + r[0] * dyImage, chunkOut, patches, patches + rows * kp * 4, ...withImages(g, r), kp, co, rows,
      ]);
      return out;
    },
    maxPoolGrad(x, dy, p) {
      const dx = internals.makeOutput([...x.shape], 'float32');
      const g = geometry(p);
      const [xImage, dyImage] = [p.inHeight * p.inWidth * p.inChannels * 4, p.outHeight * p.outWidth * p.inChannels * 4];
      run('maxPoolGrad', imageRanges(g, (2 * xImage + dyImage) / 4).map((r) => [
        offset(x) + r[0] * xImage, offset(dy) + r[0] * dyImage, offset(dx) + r[0] * xImage, ...withImages(g, r),
      ]));
      return dx;
    },
    relu6Grad(dy, x) {
      channels(x, [dy]);
      const out = internals.makeOutput([...x.shape], 'float32');
      const n = sizeOf(x);
      run('relu6Grad', chunkRanges(n, 3 * n, 4).map(([start, count]) => [
        offset(dy) + start * 4, offset(x) + start * 4, offset(out) + start * 4, count,
      ]));
      return out;
    },
    nesterovUpdate(theta, v, grad, lr, mu, wd) {
      const n = sizeOf(theta);
      for (const t of [grad, ...(v ? [v] : [])]) {
        if (sizeOf(t) !== n || t.dtype !== 'float32') throw new Error(`wasm kernels: shape [${t.shape}] does not fit [${theta.shape}]`);
      }
      const outTheta = internals.makeOutput([...theta.shape], 'float32');
      const outV = internals.makeOutput([...theta.shape], 'float32');
      run('nesterovUpdate', chunkRanges(n, 5 * n, 4).map(([start, count]) => [
        offset(theta) + start * 4, v ? offset(v) + start * 4 : 0, offset(grad) + start * 4,
        offset(outTheta) + start * 4, offset(outV) + start * 4, count, lr, mu, wd, v ? 0 : 1,
      ]));
      return [outTheta, outV];
    },
    channelAffine2(u, a, x, b, c, y) {
      const out = internals.makeOutput([...x.shape], 'float32');
      const ch = channels(x, [u, a, b, c, ...(y ? [y] : [])]);
      const pixels = sizeOf(x) / ch;
      run('channelAffine2', chunkRanges(pixels, (y ? 4 : 3) * pixels * ch).map(([start, count]) => [
        offset(u) + start * ch * 4, offset(x) + start * ch * 4, offset(out) + start * ch * 4, count, ch, offset(a), offset(b), offset(c),
        y ? offset(y) + start * ch * 4 : 0,
      ]));
      return out;
    },
    softCrossEntropy(logits, probs, targets) {
      const [b, n] = logits.shape;
      if (logits.shape.length !== 2 || n % 4 !== 0 || [logits, probs, targets].some((t) => t.dtype !== 'float32' || sizeOf(t) !== b * n)) return undefined;
      const [loss, grad, rows] = [internals.makeOutput([], 'float32'), internals.makeOutput([b, n], 'float32'), internals.makeOutput([b, 4], 'float32')];
      exports.softCrossEntropyRows(offset(logits), offset(probs), offset(targets), offset(grad), offset(rows), b, n, 1 / b);
      // Per row: max z, max p, Σ t·z, Σ t. lse = max z − log max p (see cross-entropy.ts).
      const r = view(rows);
      let total = 0;
      for (let i = 0; i < b; i++) total += r[4 * i + 2] - (r[4 * i] - Math.log(r[4 * i + 1])) * r[4 * i + 3];
      view(loss)[0] = -total / b;
      internals.disposeData(rows.dataId);
      return [loss, grad];
    },
    channelTotals(x) {
      const c = channels(x, []);
      const pixels = sizeOf(x) / c;
      const total = internals.makeOutput([c], 'float32');
      runSum(channelSumsKernel(c), chunkRanges(pixels, pixels * c, SUM_BLOCK, c), [offset(total)], c, 2 * c, ([start, count], [chunkOut], acc) => [
        0, offset(x) + start * c * 4, 0, 0, count, c, chunkOut, 0, acc, SUM_BLOCK, 1, 0,
      ]);
      return total;
    },
    channelMoments(x) {
      const c = channels(x, []);
      const pixels = sizeOf(x) / c;
      const [mean, variance, shift] = [internals.makeOutput([c], 'float32'), internals.makeOutput([c], 'float32'), internals.makeOutput([c], 'float32')];
      // One pass over x: the sums of x − K and (x − K)² with K the mean of up to SHIFT_SAMPLES
      // pixels spread over the batch, which is near the batch mean even when some pixels are far
      // off (a border of zeros, an outlier), so the shifted sums lose little to cancellation. Then
      // mean = K + Σ(x − K)/M and variance = Σ(x − K)²/M − (Σ(x − K)/M)². Whole SUM_BLOCKs per
      // chunk, so a chunk's sums round as they would uncut.
      const [xs, k] = [view(x), view(shift)];
      const samples = Math.min(pixels, SHIFT_SAMPLES);
      k.fill(0);
      for (let i = 0; i < samples; i++) {
        const at = Math.floor((i * pixels) / samples) * c;
        for (let j = 0; j < c; j++) k[j] += xs[at + j];
      }
      for (let j = 0; j < c; j++) k[j] /= samples;
      const ranges = chunkRanges(pixels, pixels * c, SUM_BLOCK, 2 * c);
      runSum(channelSumsKernel(c), ranges, [offset(mean), offset(variance)], c, 2 * c, ([start, count], [out1, out2], acc) => [
        3, offset(x) + start * c * 4, 0, offset(shift), count, c, out1, out2, acc, SUM_BLOCK, 1 / pixels, 0,
      ]);
      const [m, v] = [view(mean), view(variance)];
      for (let i = 0; i < c; i++) {
        const d = m[i];
        m[i] = k[i] + d;
        v[i] = Math.max(0, v[i] - d * d);
      }
      internals.disposeData(shift.dataId);
      return [mean, variance];
    },
    channelGradSums(dy, x, mean, y) {
      const c = channels(x, [dy, mean, ...(y ? [y] : [])]);
      const pixels = sizeOf(x) / c;
      const [sumDy, sumDyXc] = [internals.makeOutput([c], 'float32'), internals.makeOutput([c], 'float32')];
      const ranges = chunkRanges(pixels, (y ? 3 : 2) * pixels * c, SUM_BLOCK, 2 * c);
      runSum(channelSumsKernel(c), ranges, [offset(sumDy), offset(sumDyXc)], c, 2 * c, ([start, count], [out1, out2], acc) => [
        2, offset(dy) + start * c * 4, offset(x) + start * c * 4, offset(mean), count, c, out1, out2, acc, SUM_BLOCK, 1,
        y ? offset(y) + start * c * 4 : 0,
      ]);
      return [sumDy, sumDyXc];
    },
  });
  return true;
}

/** The kernels loaded for `backend`, if any. */
export function wasmKernels(backend: tf.KernelBackend): WasmKernels | undefined {
  return loaded.get(backend);
}
