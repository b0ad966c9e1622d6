import * as tf from '@tensorflow/tfjs';

type TensorInfo = tf.TensorInfo;
type Attrs = Record<string, unknown>;

/**
 * Runs backend kernels directly on TensorInfos inside a kernel body. Going through the
 * kernel registry instead of tf ops skips the engine's per-op bookkeeping (Tensor objects,
 * tape checks, scope tracking), which dominates the cost of small tensors on WASM.
 * Every intermediate is released by `done()` except the returned output.
 */
export class KernelScope {
  private readonly temps: TensorInfo[] = [];

  constructor(
    readonly backend: tf.KernelBackend,
    readonly backendName: string,
  ) {}

  run(kernelName: string, inputs: Record<string, TensorInfo>, attrs: Attrs = {}): TensorInfo {
    const config = tf.getKernel(kernelName, this.backendName);
    if (!config) throw new Error(`fast gradients: kernel ${kernelName} missing on ${this.backendName}`);
    const out = config.kernelFunc({ inputs, attrs: attrs as tf.NamedAttrMap, backend: this.backend });
    if (Array.isArray(out)) throw new Error(`fast gradients: ${kernelName} returned several outputs`);
    this.temps.push(out);
    return out;
  }

  /** Takes ownership of a tensor made outside the registry (our own WASM kernels). */
  adopt(t: TensorInfo): TensorInfo {
    this.temps.push(t);
    return t;
  }

  reshape(x: TensorInfo, shape: number[]): TensorInfo {
    if (shape.length === x.shape.length && shape.every((d, i) => d === x.shape[i])) return x;
    return this.run('Reshape', { x }, { shape });
  }

  transpose(x: TensorInfo, perm: number[]): TensorInfo {
    if (perm.every((p, i) => p === i)) return x;
    return this.run('Transpose', { x }, { perm });
  }

  /** Zero padding; `paddings` holds [before, after] per axis, all non-negative. */
  pad(x: TensorInfo, paddings: [number, number][]): TensorInfo {
    if (paddings.every(([a, b]) => a === 0 && b === 0)) return x;
    return this.run('PadV2', { x }, { paddings, constantValue: 0 });
  }

  slice(x: TensorInfo, begin: number[], size: number[]): TensorInfo {
    if (begin.every((b) => b === 0) && size.every((s, i) => s === x.shape[i])) return x;
    return this.run('Slice', { x }, { begin, size });
  }

  sum(x: TensorInfo, axis: number[], keepDims = false): TensorInfo {
    return this.run('Sum', { x }, { axis, keepDims });
  }

  /** 2-D matMul without transposed operands (transposed matMul is slow on WASM). */
  matMul(a: TensorInfo, b: TensorInfo): TensorInfo {
    const out = this.run(
      'BatchMatMul',
      { a: this.reshape(a, [1, a.shape[0], a.shape[1]]), b: this.reshape(b, [1, b.shape[0], b.shape[1]]) },
      { transposeA: false, transposeB: false },
    );
    return this.reshape(out, [a.shape[0], b.shape[1]]);
  }

  /**
   * Mean over N, H and W of an NHWC tensor -> [C]: a global AvgPool (XNNPACK) per image, then
   * a sum over the small [N, C]. Sum/Mean over leading axes transpose the whole tensor on WASM,
   * and matMul with ones repacks the big operand as weights on every call.
   */
  meanLeading(x: TensorInfo): TensorInfo {
    const [n, h, w, c] = x.shape;
    const pooled = this.run('AvgPool', { x }, { filterSize: [h, w], strides: [1, 1], pad: 'valid' });
    const perImage = this.reshape(pooled, [n, c]);
    if (n === 1) return this.reshape(perImage, [c]);
    return this.run('Multiply', { a: this.sum(perImage, [0]), b: this.scalar(1 / n) });
  }

  /**
   * Per-channel x·scale + bias over the last axis as a 1x1 depthwise conv (XNNPACK's
   * multiply-add kernel): broadcasting binary ops take a slow generic path on WASM.
   * `scale` and `bias` must be fresh rank-1 [C] tensors (WASM checks the buffer's own rank).
   * With `activation` 'relu6' the result is clamped to [0, 6] in the same pass.
   */
  affine(x: TensorInfo, scale: TensorInfo, bias?: TensorInfo, activation: 'linear' | 'relu6' = 'linear'): TensorInfo {
    const c = x.shape[x.shape.length - 1];
    const m = x.shape.reduce((a, b) => a * b, 1) / c;
    const x4 = x.shape.length === 4 ? x : this.reshape(x, [1, 1, m, c]);
    const inputs: Record<string, TensorInfo> = { x: x4, filter: this.reshape(scale, [1, 1, c, 1]) };
    if (bias) inputs.bias = bias;
    const out = this.run('FusedDepthwiseConv2D', inputs, {
      strides: [1, 1],
      pad: 'valid',
      dilations: [1, 1],
      dataFormat: 'NHWC',
      activation,
    });
    return this.reshape(out, x.shape);
  }

  /** A [C] vector filled with `value`. */
  vector(c: number, value: number): TensorInfo {
    return this.run('Fill', {}, { shape: [c], value, dtype: 'float32' });
  }

  scalar(value: number): TensorInfo {
    return this.run('Fill', {}, { shape: [], value, dtype: 'float32' });
  }

  /** Releases every intermediate except `keep`; the caller hands `keep` to the engine. */
  done(keep: TensorInfo): TensorInfo {
    // An input passed through unchanged needs its own reference before it becomes an output.
    if (!this.temps.includes(keep)) keep = this.run('Reshape', { x: keep }, { shape: keep.shape });
    for (const t of this.temps) {
      if (t !== keep) this.backend.disposeData(t.dataId);
    }
    this.temps.length = 0;
    return keep;
  }

  /** Releases everything on error paths. */
  dispose(): void {
    for (const t of this.temps) this.backend.disposeData(t.dataId);
    this.temps.length = 0;
  }
}

/** Runs `body` in a fresh KernelScope and returns its single output. */
export function withScope(
  backend: tf.KernelBackend,
  backendName: string,
  body: (s: KernelScope) => TensorInfo,
): TensorInfo {
  const scope = new KernelScope(backend, backendName);
  try {
    return scope.done(body(scope));
  } catch (err) {
    scope.dispose();
    throw err;
  }
}
