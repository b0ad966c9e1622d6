import * as tf from '@tensorflow/tfjs';
import { RELU6_MASK_GRAD_KERNEL } from './activations.js';
import { KernelScope, withScope } from './kernel-ops.js';
import { fusesRelu6, markClamped } from './relu6-fusion.js';
import { wasmKernels } from './wasm-kernels.js';

/**
 * Batch normalisation in training mode as one taped op with a hand-written gradient.
 *
 * tf.layers' BatchNormalization computes tf.moments (Mean, Sub, Square, Mean, reshapes) and
 * then FusedBatchNorm; backprop then walks all of these plus tfjs-core's FusedBatchNorm
 * gradient, which tiles a full-size tensor: about 30 full-size passes per BN layer. The
 * fused version, with the same maths, takes 3 passes forward (mean, variance, scale/shift as a
 * 1x1 depthwise conv, because broadcasting binary ops are slow on WASM) and 2 backward with our
 * WASM kernels, a few more without them (the pure-JS CPU backend).
 */

type TensorInfo = tf.TensorInfo;

/** What the training-mode op applies to its output: nothing, or ReLU6 fused in (relu6-fusion.ts). */
export type BatchNormActivation = 'linear' | 'relu6';

export const BN_TRAIN_KERNEL = 'CotuneBatchNormTrain';
export const BN_TRAIN_GRAD_KERNEL = 'CotuneBatchNormTrainGrad';

/** Batch mean and biased variance per channel from fast forward kernels (where our WASM kernels are missing). */
function composedMoments(be: tf.KernelBackend, backendName: string, x: TensorInfo): [TensorInfo, TensorInfo] {
  const mean = withScope(be, backendName, (s) => s.meanLeading(x));
  const variance = withScope(be, backendName, (s) => {
    const centred = s.affine(x, s.vector(x.shape[3], 1), s.run('Neg', { x: mean }));
    return s.meanLeading(s.run('Multiply', { a: centred, b: centred }));
  });
  return [mean, variance];
}

/** Σ dy and Σ dy·(x − mean) per channel from fast forward kernels. */
function composedGradSums(be: tf.KernelBackend, backendName: string, dy: TensorInfo, x: TensorInfo, mean: TensorInfo): [TensorInfo, TensorInfo] {
  const count = x.shape[0] * x.shape[1] * x.shape[2];
  const sumOf = (s: KernelScope, t: TensorInfo) => s.run('Multiply', { a: s.meanLeading(t), b: s.scalar(count) });
  const sumDy = withScope(be, backendName, (s) => sumOf(s, dy));
  const sumDyXc = withScope(be, backendName, (s) => sumOf(s, s.run('Multiply', { a: dy, b: s.affine(x, s.vector(x.shape[3], 1), s.run('Neg', { x: mean })) })));
  return [sumDy, sumDyXc];
}

/**
 * x [N,H,W,C], gamma, beta, movingMean, movingVariance [C] -> y, batch mean, biased batch
 * variance, and the moving statistics updated as tf.layers does: m − (m − batch)·decay.
 * With activation 'relu6', y is clamped to [0, 6] in the same pass.
 */
function bnTrainKernel(backendName: string): tf.KernelConfig {
  return {
    kernelName: BN_TRAIN_KERNEL,
    backendName,
    kernelFunc: ({ inputs, attrs, backend }) => {
      const { x, gamma, beta, movingMean, movingVariance } = inputs as Record<string, TensorInfo>;
      const { epsilon: eps, decay, activation } = attrs as { epsilon: number; decay: number; activation: BatchNormActivation };
      const be = backend as tf.KernelBackend;
      const own = wasmKernels(be);
      if (own) {
        const [mean, variance] = own.channelMoments(x);
        // y = x·a + (β − mean·a) with a = γ / √(var + ε); moving statistics m − (m − batch)·decay,
        // rounded to float32 at each step as tf.layers' ops do (the change is tiny next to m).
        const f = Math.fround;
        const d = f(decay);
        const [a, b, movedMean, movedVariance] = own.perChannel(
          [gamma, beta, mean, variance, movingMean, movingVariance],
          4,
          ([g, bt, m, v, mm, mv], [oa, ob, omm, omv]) => {
            for (let i = 0; i < g.length; i++) {
              oa[i] = g[i] / Math.sqrt(v[i] + eps);
              ob[i] = bt[i] - m[i] * oa[i];
              omm[i] = mm[i] - f(f(mm[i] - m[i]) * d);
              omv[i] = mv[i] - f(f(mv[i] - v[i]) * d);
            }
          },
        );
        const y = withScope(be, backendName, (s) => s.affine(x, s.adopt(a), s.adopt(b), activation));
        return [y, mean, variance, movedMean, movedVariance];
      }
      const [mean, variance] = composedMoments(be, backendName, x);
      const y = withScope(be, backendName, (s) => {
        // y = x·a + (β − mean·a) with a = γ·rsqrt(var + ε)
        const a = s.run('Multiply', { a: gamma, b: s.run('Rsqrt', { x: s.run('Add', { a: variance, b: s.scalar(eps) }) }) });
        return s.affine(x, a, s.run('Sub', { a: beta, b: s.run('Multiply', { a: mean, b: a }) }), activation);
      });
      // Here rather than in tf ops after the call: that was about 200 engine ops per MobileNet step.
      const moved = (moving: TensorInfo, batch: TensorInfo) =>
        withScope(be, backendName, (s) => s.run('Sub', { a: moving, b: s.run('Multiply', { a: s.run('Sub', { a: moving, b: batch }), b: s.scalar(decay) }) }));
      return [y, mean, variance, moved(movingMean, mean), moved(movingVariance, variance)];
    },
  };
}

/**
 * dy, x, mean, variance, gamma -> dx, dgamma, dbeta (full gradient through the batch
 * statistics). With the clamped output y among the inputs (ReLU6 fused in), dy is first masked
 * where the clamp was flat: 0 < y < 6 exactly where the pre-clamp value was.
 */
function bnTrainGradKernel(backendName: string): tf.KernelConfig {
  return {
    kernelName: BN_TRAIN_GRAD_KERNEL,
    backendName,
    kernelFunc: ({ inputs, attrs, backend }) => {
      const { x, mean, variance, gamma } = inputs as Record<string, TensorInfo>;
      const given = inputs.dy as TensorInfo;
      const y = inputs.y as TensorInfo | undefined;
      const eps = attrs?.epsilon as number;
      const be = backend as tf.KernelBackend;
      // Our kernels take the mask in their two passes; elsewhere it is a pass of its own.
      if (wasmKernels(be)) return bnGrad(be, backendName, given, x, mean, variance, gamma, eps, y);
      const masked = y ? withScope(be, backendName, (s) => s.run(RELU6_MASK_GRAD_KERNEL, { dy: given, x: y })) : undefined;
      try {
        return bnGrad(be, backendName, masked ?? given, x, mean, variance, gamma, eps);
      } finally {
        if (masked) be.disposeData(masked.dataId);
      }
    },
  };
}

/**
 * The batch-norm input, scale and offset gradients of dy (see bnTrainGradKernel); with `y`
 * (our WASM kernels only), of dy masked where 0 < y < 6.
 */
function bnGrad(
  be: tf.KernelBackend,
  backendName: string,
  dy: TensorInfo,
  x: TensorInfo,
  mean: TensorInfo,
  variance: TensorInfo,
  gamma: TensorInfo,
  eps: number,
  y?: TensorInfo,
): TensorInfo[] {
  const count = x.shape[0] * x.shape[1] * x.shape[2];
  const own = wasmKernels(be);
  if (own) {
    // Σ dy and Σ dy·(x − mean) in one pass, then dx = dy·a + x·b + c in another (see below).
    const [dbeta, sumDyXc] = own.channelGradSums(dy, x, mean, y);
    const [dgamma, a, b, c] = own.perChannel([gamma, mean, variance, dbeta, sumDyXc], 4, ([g, m, v, db, sdx], [odg, oa, ob, oc]) => {
      for (let i = 0; i < g.length; i++) {
        const rstd = 1 / Math.sqrt(v[i] + eps);
        odg[i] = sdx[i] * rstd;
        oa[i] = g[i] * rstd;
        ob[i] = (-oa[i] * rstd * odg[i]) / count;
        oc[i] = (-oa[i] * db[i]) / count - m[i] * ob[i];
      }
    });
    const dx = own.channelAffine2(dy, a, x, b, c, y);
    for (const t of [sumDyXc, a, b, c]) be.disposeData(t.dataId);
    return [dx, dgamma, dbeta];
  }
  const rstd = withScope(be, backendName, (s) =>
    s.run('Rsqrt', { x: s.run('Add', { a: variance, b: s.scalar(eps) }) }),
  );
  // Σ dy and Σ dy·(x − mean); dγ = rstd · Σ dy·(x − mean).
  const [dbeta, sumDyXc] = composedGradSums(be, backendName, dy, x, mean);
  const dgamma = withScope(be, backendName, (s) => s.run('Multiply', { a: s.adopt(sumDyXc), b: rstd }));
  const dx = withScope(be, backendName, (s) => {
    // dx = γ·rstd·(dy − Σdy/M − x̂·Σ(dy·x̂)/M) = dy·a + x·b + c with
    // a = γ·rstd, b = −a·rstd·dγ/M, c = −a·dβ/M − mean·b.
    const a = s.run('Multiply', { a: gamma, b: rstd });
    const negAOverM = s.run('Multiply', { a, b: s.scalar(-1 / count) });
    const b = s.run('Multiply', { a: s.run('Multiply', { a: negAOverM, b: rstd }), b: dgamma });
    const c = s.run('Sub', { a: s.run('Multiply', { a: negAOverM, b: dbeta }), b: s.run('Multiply', { a: mean, b }) });
    return s.run('Add', { a: s.affine(dy, a, c), b: s.affine(x, b) });
  });
  be.disposeData(rstd.dataId);
  return [dx, dgamma, dbeta];
}

/**
 * FusedBatchNorm (inference mode: moving statistics) on WASM as one per-channel multiply-add,
 * y = x·a + (offset − mean·a) with a = scale·rsqrt(variance + ε), run by XNNPACK. The stock WASM
 * kernel takes about 60 % of a MobileNet inference pass (46 of 79 ms at 128 px, batch 32).
 * Statistics that are not rank-1 per-channel vectors go to the stock kernel.
 */
function bnInferenceKernel(backendName: string): tf.KernelConfig {
  const stock = tf.getKernel('FusedBatchNorm', backendName);
  return {
    kernelName: 'FusedBatchNorm',
    backendName,
    kernelFunc: (args) => {
      const { x, mean, variance, offset, scale } = args.inputs as {
        x: TensorInfo;
        mean: TensorInfo;
        variance: TensorInfo;
        offset?: TensorInfo;
        scale?: TensorInfo;
      };
      const eps = (args.attrs as { varianceEpsilon: number }).varianceEpsilon;
      const c = x.shape[x.shape.length - 1];
      const perChannel = (t?: TensorInfo) => t == null || (t.shape.length === 1 && t.shape[0] === c && t.dtype === 'float32');
      if (x.dtype !== 'float32' || x.shape.length < 2 || ![mean, variance, offset, scale].every(perChannel)) return stock.kernelFunc(args);
      return withScope(args.backend as tf.KernelBackend, backendName, (s) => {
        const rstd = s.run('Rsqrt', { x: s.run('Add', { a: variance, b: s.scalar(eps) }) });
        const a = scale ? s.run('Multiply', { a: rstd, b: scale }) : rstd;
        const meanA = s.run('Multiply', { a: mean, b: a });
        const b = offset ? s.run('Sub', { a: offset, b: meanA }) : s.run('Neg', { x: meanA });
        return s.affine(x, a, b);
      });
    },
  };
}

export function batchNormKernels(backendName: string): tf.KernelConfig[] {
  const kernels = [bnTrainKernel(backendName), bnTrainGradKernel(backendName)];
  // The pure-JS CPU backend has no faster multiply-add than its own loop.
  if (backendName === 'wasm') kernels.push(bnInferenceKernel(backendName));
  return kernels;
}

/**
 * Training-mode batch norm over the last axis of a 4-D x; returns y (clamped to [0, 6] with
 * activation 'relu6') and the moving statistics updated with this batch's. The new statistics
 * are kept out of every tidy scope (customGrad runs its forward in one): the caller disposes them.
 */
export function batchNormTrain(
  x: tf.Tensor4D,
  gamma: tf.Tensor1D,
  beta: tf.Tensor1D,
  epsilon: number,
  moving: { mean: tf.Tensor1D; variance: tf.Tensor1D; decay: number },
  activation: BatchNormActivation = 'linear',
): { y: tf.Tensor4D; movingMean: tf.Tensor1D; movingVariance: tf.Tensor1D } {
  let movingMean: tf.Tensor1D | undefined;
  let movingVariance: tf.Tensor1D | undefined;
  const op = tf.customGrad((xx, gg, bb, save) => {
    const inputs = { x: xx as tf.Tensor, gamma: gg as tf.Tensor, beta: bb as tf.Tensor, movingMean: moving.mean, movingVariance: moving.variance };
    const attrs = { epsilon, decay: moving.decay, activation };
    const [y, m, v, mm, mv] = tf.engine().runKernel(BN_TRAIN_KERNEL, inputs, attrs) as tf.Tensor[];
    movingMean = tf.keep(mm as tf.Tensor1D);
    movingVariance = tf.keep(mv as tf.Tensor1D);
    // The clamped output carries the ReLU6 mask for the gradient.
    (save as tf.GradSaveFunc)([xx as tf.Tensor, m, v, gg as tf.Tensor, ...(activation === 'relu6' ? [y] : [])]);
    return {
      value: y,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [sx, sm, sv, sg, sy] = saved;
        const gradInputs: tf.NamedTensorMap = { dy, x: sx, mean: sm, variance: sv, gamma: sg };
        if (sy) gradInputs.y = sy;
        return tf.engine().runKernel(BN_TRAIN_GRAD_KERNEL, gradInputs, { epsilon }) as tf.Tensor[];
      },
    };
  });
  const y = op(x, gamma, beta) as tf.Tensor4D;
  return { y, movingMean: movingMean as tf.Tensor1D, movingVariance: movingVariance as tf.Tensor1D };
}

interface BatchNormLayerInternals {
  axis: number;
  momentum: number;
  epsilon: number;
  center: boolean;
  scale: boolean;
  gamma: tf.LayerVariable;
  beta: tf.LayerVariable;
  movingMean: tf.LayerVariable;
  movingVariance: tf.LayerVariable;
  call(inputs: tf.Tensor | tf.Tensor[], kwargs: Record<string, unknown>): tf.Tensor | tf.Tensor[];
}

let patched = false;

/**
 * Routes tf.layers BatchNormalization.call in training mode (4-D input, channels last, with
 * centre and scale) through batchNormTrain when the active backend is one of `backends`, with
 * the next relu6 Activation fused in where relu6-fusion.ts allows. Moving statistics are
 * updated exactly as tf.layers does. Everything else takes the original path.
 */
export function patchBatchNormLayer(backends: ReadonlySet<string>): void {
  if (patched) return;
  patched = true;
  const proto = Object.getPrototypeOf(tf.layers.batchNormalization({})) as BatchNormLayerInternals;
  const original = proto.call;
  proto.call = function (this: BatchNormLayerInternals, inputs, kwargs) {
    const input = Array.isArray(inputs) ? inputs[0] : inputs;
    const training = kwargs?.training === true;
    const axis = this.axis < 0 ? this.axis + (input?.rank ?? 0) : this.axis;
    if (
      !training ||
      (Array.isArray(inputs) && inputs.length !== 1) ||
      input.rank !== 4 ||
      input.dtype !== 'float32' ||
      axis !== 3 ||
      !this.center ||
      !this.scale ||
      !backends.has(tf.getBackend())
    ) {
      return original.call(this, inputs, kwargs);
    }
    const activation = fusesRelu6(this as unknown as tf.layers.Layer) ? 'relu6' : 'linear';
    return tf.tidy(() => {
      const { y, movingMean, movingVariance } = batchNormTrain(
        input as tf.Tensor4D,
        this.gamma.read() as tf.Tensor1D,
        this.beta.read() as tf.Tensor1D,
        this.epsilon,
        { mean: this.movingMean.read() as tf.Tensor1D, variance: this.movingVariance.read() as tf.Tensor1D, decay: 1 - this.momentum },
        activation,
      );
      this.movingMean.write(movingMean);
      this.movingVariance.write(movingVariance);
      tf.dispose([movingMean, movingVariance]);
      return activation === 'relu6' ? markClamped(y) : y;
    });
  };
}
