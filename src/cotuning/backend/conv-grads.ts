import * as tf from '@tensorflow/tfjs';
import { KernelScope, withScope } from './kernel-ops.js';
import { wasmKernels } from './wasm-kernels.js';

/**
 * Convolution gradients from forward kernels (conv, depthwise conv, matMul, transpose, pad,
 * reshape, sum), which XNNPACK runs fast on WASM, or from our WASM kernels where those are
 * faster (filter gradients, the strided depthwise input gradient). Each gradient costs about
 * one forward convolution; no per-element JS loops and no tile / strided slice / transposed
 * matMul, which are slow on WASM.
 */

type TensorInfo = tf.TensorInfo;
type Pad = 'same' | 'valid' | number | tf.backend_util.ExplicitPadding;
type Pair = number | [number, number];

interface ConvAttrs {
  strides: Pair;
  pad: Pad;
  dilations?: Pair;
  dimRoundingMode?: 'floor' | 'round' | 'ceil';
  dataFormat?: 'NHWC' | 'NCHW';
}

const pair = (v: Pair | null | undefined): [number, number] =>
  v == null ? [1, 1] : typeof v === 'number' ? [v, v] : [v[0], v[1]];

function convInfo(
  xShape: number[],
  filterShape: number[],
  attrs: ConvAttrs,
  depthwise: boolean,
): tf.backend_util.Conv2DInfo {
  if (attrs.dataFormat === 'NCHW') throw new Error('fast gradients: only NHWC convolutions are supported');
  return tf.backend_util.computeConv2DInfo(
    xShape as [number, number, number, number],
    filterShape as [number, number, number, number],
    attrs.strides,
    pair(attrs.dilations),
    attrs.pad,
    attrs.dimRoundingMode,
    depthwise,
  );
}

const isPointwise = (c: tf.backend_util.Conv2DInfo): boolean =>
  c.filterHeight === 1 &&
  c.filterWidth === 1 &&
  c.strideHeight === 1 &&
  c.strideWidth === 1 &&
  c.padInfo.top === 0 &&
  c.padInfo.left === 0 &&
  c.padInfo.bottom === 0 &&
  c.padInfo.right === 0;

/**
 * Turns dy into the input of the "full" correlation that yields dx: zeros between rows and
 * columns for strides > 1 (done with 3-D pads of reshaped views, which are fast), then
 * padding by effectiveFilter - 1 - pad. Negative paddings become crops.
 */
function upsampleAndPad(s: KernelScope, dy: TensorInfo, c: tf.backend_util.Conv2DInfo): {
  u: TensorInfo;
  pad: tf.backend_util.ExplicitPadding;
} {
  const [n, ho, wo, ch] = dy.shape;
  let u = dy;
  let uw = wo;
  let uh = ho;
  if (c.strideWidth > 1) {
    u = s.pad(s.reshape(u, [n * ho * wo, 1, ch]), [[0, 0], [0, c.strideWidth - 1], [0, 0]]);
    uw = wo * c.strideWidth;
    u = s.reshape(u, [n, ho, uw, ch]);
  }
  if (c.strideHeight > 1) {
    u = s.pad(s.reshape(u, [n * ho, 1, uw * ch]), [[0, 0], [0, c.strideHeight - 1], [0, 0]]);
    uh = ho * c.strideHeight;
    u = s.reshape(u, [n, uh, uw, ch]);
  }
  let top = c.effectiveFilterHeight - 1 - c.padInfo.top;
  let left = c.effectiveFilterWidth - 1 - c.padInfo.left;
  let bottom = c.inHeight + c.padInfo.top - uh;
  let right = c.inWidth + c.padInfo.left - uw;
  if (top < 0 || left < 0 || bottom < 0 || right < 0) {
    const cropTop = Math.max(0, -top);
    const cropLeft = Math.max(0, -left);
    const keepH = uh - cropTop - Math.max(0, -bottom);
    const keepW = uw - cropLeft - Math.max(0, -right);
    u = s.slice(u, [0, cropTop, cropLeft, 0], [n, keepH, keepW, ch]);
    top = Math.max(0, top);
    left = Math.max(0, left);
    bottom = Math.max(0, bottom);
    right = Math.max(0, right);
  }
  return {
    u,
    pad: [
      [0, 0],
      [top, bottom],
      [left, right],
      [0, 0],
    ],
  };
}

/**
 * Explicit padding of x so that a stride-d, dilation-s "valid" correlation with dy as the
 * filter yields exactly the filter taps; too-large outputs are cropped by the caller.
 */
function filterGradPadding(c: tf.backend_util.Conv2DInfo): tf.backend_util.ExplicitPadding {
  const needH = (c.filterHeight - 1) * c.dilationHeight + (c.outHeight - 1) * c.strideHeight + 1;
  const needW = (c.filterWidth - 1) * c.dilationWidth + (c.outWidth - 1) * c.strideWidth + 1;
  return [
    [0, 0],
    [c.padInfo.top, Math.max(0, needH - c.inHeight - c.padInfo.top)],
    [c.padInfo.left, Math.max(0, needW - c.inWidth - c.padInfo.left)],
    [0, 0],
  ];
}

export function conv2DBackpropInput(
  s: KernelScope,
  dy: TensorInfo,
  filter: TensorInfo,
  inputShape: number[],
  attrs: ConvAttrs,
): TensorInfo {
  const c = convInfo(inputShape, filter.shape, attrs, false);
  const [, , ci, co] = filter.shape;
  if (isPointwise(c)) {
    // dx = dy · Wᵀ with the small filter transposed explicitly.
    const wT = s.transpose(s.reshape(filter, [ci, co]), [1, 0]);
    const dy2 = s.reshape(dy, [dy.shape[0] * dy.shape[1] * dy.shape[2], co]);
    const own = wasmKernels(s.backend)?.matMul(dy2, wT);
    return s.reshape(own ? s.adopt(own) : s.matMul(dy2, wT), inputShape);
  }
  const rotated = s.transpose(s.run('Reverse', { x: filter }, { dims: [0, 1] }), [0, 1, 3, 2]);
  const { u, pad } = upsampleAndPad(s, dy, c);
  return s.run(
    'Conv2D',
    { x: u, filter: rotated },
    { strides: [1, 1], pad, dataFormat: 'NHWC', dilations: [c.dilationHeight, c.dilationWidth] },
  );
}

export function conv2DBackpropFilter(
  s: KernelScope,
  x: TensorInfo,
  dy: TensorInfo,
  filterShape: number[],
  attrs: ConvAttrs,
): TensorInfo {
  const c = convInfo(x.shape, filterShape, attrs, false);
  const [kh, kw, ci, co] = filterShape;
  const m = x.shape[0] * x.shape[1] * x.shape[2];
  if (isPointwise(c)) {
    const own = wasmKernels(s.backend)?.matMulTransposedA(x, dy);
    if (own) return s.reshape(s.adopt(own), filterShape);
    // dW = xᵀ · dy; transpose whichever operand is smaller.
    if (ci <= co) {
      const xT = s.transpose(s.reshape(x, [m, ci]), [1, 0]);
      return s.reshape(s.matMul(xT, s.reshape(dy, [m, co])), filterShape);
    }
    const dyT = s.transpose(s.reshape(dy, [m, co]), [1, 0]);
    const dwT = s.matMul(dyT, s.reshape(x, [m, ci]));
    return s.reshape(s.transpose(dwT, [1, 0]), filterShape);
  }
  const own = wasmKernels(s.backend)?.convFilterGrad(x, dy, c);
  if (own) return s.adopt(own);
  // Channels of x become the batch, the batch becomes the contraction axis: one conv with dy as filter.
  const xT = s.transpose(x, [3, 1, 2, 0]); // [ci, H, W, N]
  const dyF = s.transpose(dy, [1, 2, 0, 3]); // [Ho, Wo, N, co]
  const out = s.run(
    'Conv2D',
    { x: xT, filter: dyF },
    {
      strides: [c.dilationHeight, c.dilationWidth],
      dilations: [c.strideHeight, c.strideWidth],
      pad: filterGradPadding(c),
      dataFormat: 'NHWC',
    },
  ); // [ci, kh', kw', co]
  const cropped = s.slice(out, [0, 0, 0, 0], [ci, kh, kw, co]);
  return s.transpose(cropped, [1, 2, 0, 3]);
}

export function depthwiseBackpropInput(
  s: KernelScope,
  dy: TensorInfo,
  filter: TensorInfo,
  inputShape: number[],
  attrs: ConvAttrs,
): TensorInfo {
  const c = convInfo(inputShape, filter.shape, attrs, true);
  const [kh, kw, ch, mult] = filter.shape;
  const own = wasmKernels(s.backend);
  // Strided: scatter dy directly rather than convolve a zero-inserted copy of it.
  if (own && mult === 1 && (c.strideHeight > 1 || c.strideWidth > 1) && filter.dtype === 'float32' && dy.dtype === 'float32') {
    return s.adopt(own.depthwiseInputGrad(dy, filter, c));
  }
  const rotated = s.reshape(s.run('Reverse', { x: filter }, { dims: [0, 1] }), [kh, kw, ch * mult, 1]);
  const { u, pad } = upsampleAndPad(s, dy, c);
  const out = s.run(
    'DepthwiseConv2dNative',
    { x: u, filter: rotated },
    { strides: [1, 1], pad, dilations: [c.dilationHeight, c.dilationWidth] },
  );
  if (mult === 1) return out;
  const [n, h, w] = inputShape;
  return s.sum(s.reshape(out, [n, h, w, ch, mult]), [4]);
}

/** Channel count up to which the depthwise filter gradient uses a dense conv (measured on WASM). */
const SMALL_DEPTHWISE = 16;

export function depthwiseBackpropFilter(
  s: KernelScope,
  x: TensorInfo,
  dy: TensorInfo,
  filterShape: number[],
  attrs: ConvAttrs,
): TensorInfo {
  const c = convInfo(x.shape, filterShape, attrs, true);
  const [kh, kw, ch, mult] = filterShape;
  const [n, h, w] = x.shape;
  const [, ho, wo] = dy.shape;
  const own = wasmKernels(s.backend);
  if (mult === 1 && own) return s.adopt(own.depthwiseFilterGrad(x, dy, c));
  if (mult === 1 && ch <= SMALL_DEPTHWISE) {
    // Few channels: the full channel×channel filter gradient as one dense conv (XNNPACK GEMM),
    // then its diagonal. C× the FLOPs, but faster than the grouped conv below for C ≤ 16.
    const full = conv2DBackpropFilter(s, x, dy, [kh, kw, ch, ch], attrs); // [kh, kw, ch, ch]
    // WASM's OneHot writes int32 whatever dtype is asked for, hence the Cast.
    const eyeInt = s.run(
      'OneHot',
      { indices: s.run('Range', {}, { start: 0, stop: ch, step: 1, dtype: 'int32' }) },
      { depth: ch, onValue: 1, offValue: 0, dtype: 'int32' },
    );
    const eye = s.run('Cast', { x: eyeInt }, { dtype: 'float32' });
    const diagonal = s.sum(s.run('Multiply', { a: full, b: s.reshape(eye, [1, 1, ch, ch]) }), [3]);
    return s.reshape(diagonal, filterShape);
  }
  // One depthwise conv over (batch, channel) pairs with dy as the per-pair filter, then a sum over the batch.
  const xT = s.reshape(s.transpose(x, [1, 2, 0, 3]), [1, h, w, n * ch]);
  const dyF =
    mult === 1
      ? s.reshape(s.transpose(dy, [1, 2, 0, 3]), [ho, wo, n * ch, 1])
      : s.reshape(s.transpose(s.reshape(dy, [n, ho, wo, ch, mult]), [1, 2, 0, 3, 4]), [ho, wo, n * ch, mult]);
  const out = s.run(
    'DepthwiseConv2dNative',
    { x: xT, filter: dyF },
    {
      strides: [c.dilationHeight, c.dilationWidth],
      dilations: [c.strideHeight, c.strideWidth],
      pad: filterGradPadding(c),
    },
  ); // [1, kh', kw', n*ch*mult]
  const cropped = s.slice(out, [0, 0, 0, 0], [1, kh, kw, n * ch * mult]);
  const summed = s.sum(s.reshape(cropped, [kh * kw, n, ch * mult]), [1]);
  return s.reshape(summed, filterShape);
}

/**
 * Conv2D on WASM with pointwise (1x1, stride 1, unpadded) convolutions as our x·W on the filter
 * as it lies (wasm-kernels matMul). XNNPACK packs every filter it has not seen, which in
 * training is every filter on every step, and even on a packed filter its product was slower
 * than ours: MobileNet v1 0.25's pointwise layers at 96 px, batch 32, 2 threads, took 5.3 ms
 * packed and 6.5 ms fresh against 3.7 ms. Everything else goes to the stock kernel.
 */
export function pointwiseConv2DKernel(backendName: string): tf.KernelConfig {
  const stock = tf.getKernel('Conv2D', backendName);
  return {
    kernelName: 'Conv2D',
    backendName,
    kernelFunc: (args) => {
      const { x, filter } = args.inputs as Record<string, TensorInfo>;
      const attrs = args.attrs as unknown as ConvAttrs;
      const own = wasmKernels(args.backend as tf.KernelBackend);
      if (!own || attrs.dataFormat === 'NCHW' || x.shape.length !== 4 || filter.shape.length !== 4) return stock.kernelFunc(args);
      if (!isPointwise(convInfo(x.shape, filter.shape, attrs, false))) return stock.kernelFunc(args);
      const [n, h, w, ci] = x.shape;
      const co = filter.shape[3];
      return withScope(args.backend as tf.KernelBackend, backendName, (s) => {
        const y = own.matMul(s.reshape(x, [n * h * w, ci]), s.reshape(filter, [ci, co]));
        return y ? s.reshape(s.adopt(y), [n, h, w, co]) : s.adopt(stock.kernelFunc(args) as TensorInfo);
      });
    },
  };
}

type Body = (s: KernelScope, inputs: Record<string, TensorInfo>, attrs: tf.NamedAttrMap) => TensorInfo;

const bodies: Record<string, Body> = {
  Conv2DBackpropInput: (s, { dy, filter }, a) =>
    conv2DBackpropInput(s, dy, filter, a.inputShape as number[], a as unknown as ConvAttrs),
  Conv2DBackpropFilter: (s, { x, dy }, a) =>
    conv2DBackpropFilter(s, x, dy, a.filterShape as number[], a as unknown as ConvAttrs),
  DepthwiseConv2dNativeBackpropInput: (s, { dy, filter }, a) =>
    depthwiseBackpropInput(s, dy, filter, a.inputShape as number[], a as unknown as ConvAttrs),
  DepthwiseConv2dNativeBackpropFilter: (s, { x, dy }, a) =>
    depthwiseBackpropFilter(s, x, dy, a.filterShape as number[], a as unknown as ConvAttrs),
};

/**
 * Kernel configs for the four convolution gradient kernels on `backendName`. NCHW (which
 * tf.layers never emits: it transposes to NHWC) goes to the backend's own kernel where it has one.
 */
export function convGradKernels(backendName: string): tf.KernelConfig[] {
  return Object.entries(bodies).map(([kernelName, body]) => {
    const stock = tf.getKernel(kernelName, backendName);
    return {
      kernelName,
      backendName,
      kernelFunc: (args) => {
        if (args.attrs?.dataFormat === 'NCHW' && stock) return stock.kernelFunc(args);
        return withScope(args.backend as tf.KernelBackend, backendName, (s) =>
          body(s, args.inputs as Record<string, TensorInfo>, args.attrs ?? {}),
        );
      },
    };
  });
}

const dilated = (d: Pair | null | undefined): boolean => pair(d).some((v) => v !== 1);

function checkDilation(d: Pair | null | undefined, fastBackends: ReadonlySet<string>): void {
  // Other backends' gradient kernels ignore the dilations attribute.
  if (dilated(d) && !fastBackends.has(tf.getBackend())) {
    throw new Error(`gradient of a dilated convolution is not supported on backend ${tf.getBackend()}`);
  }
}

/**
 * Conv2D / depthwise gradients that forward `dilations` to the kernels above (tfjs-core's
 * own gradients reject dilation > 1). Non-dilated convolutions call the same kernels with
 * the same attributes as tfjs-core does.
 */
/** Gradient config of a convolution whose input and filter gradients are the two named kernels. */
function convGradConfig(
  kernelName: string,
  inputGradKernel: string,
  filterGradKernel: string,
  commonAttrs: (a: ConvAttrs) => Record<string, unknown>,
  fastBackends: ReadonlySet<string>,
): tf.GradConfig {
  return {
    kernelName,
    inputsToSave: ['x', 'filter'],
    gradFunc: (dy, saved, attrs) => {
      const [x, filter] = saved;
      const a = attrs as unknown as ConvAttrs;
      checkDilation(a.dilations, fastBackends);
      const common = commonAttrs(a);
      return {
        x: () => tf.engine().runKernel(inputGradKernel, { dy: dy as tf.Tensor, filter }, { ...common, inputShape: x.shape } as unknown as tf.NamedAttrMap) as tf.Tensor,
        filter: () => tf.engine().runKernel(filterGradKernel, { x, dy: dy as tf.Tensor }, { ...common, filterShape: filter.shape } as unknown as tf.NamedAttrMap) as tf.Tensor,
      };
    },
  };
}

export const convGradConfigs = (fastBackends: ReadonlySet<string>): tf.GradConfig[] => [
  convGradConfig(
    'Conv2D',
    'Conv2DBackpropInput',
    'Conv2DBackpropFilter',
    (a) => ({ strides: a.strides, pad: a.pad, dataFormat: a.dataFormat, dimRoundingMode: a.dimRoundingMode, dilations: a.dilations }),
    fastBackends,
  ),
  convGradConfig(
    'DepthwiseConv2dNative',
    'DepthwiseConv2dNativeBackpropInput',
    'DepthwiseConv2dNativeBackpropFilter',
    (a) => ({ strides: a.strides, pad: a.pad, dimRoundingMode: a.dimRoundingMode, dilations: a.dilations ?? [1, 1] }),
    fastBackends,
  ),
];

interface Conv2DLayerInternals {
  rank: number;
  kernel: { read(): tf.Tensor };
  bias: { read(): tf.Tensor } | null;
  strides: [number, number];
  padding: string;
  dataFormat: string;
  dilationRate: [number, number];
  activation: { apply(x: tf.Tensor): tf.Tensor } | null;
  call(inputs: tf.Tensor | tf.Tensor[], kwargs: Record<string, unknown>): tf.Tensor | tf.Tensor[];
}

let convLayerPatched = false;

/**
 * tf.layers' Conv2D runs every convolution as tf.fused.conv2d, whose gradient computes dx and
 * dW eagerly. For the first layer dx is the gradient of the input image, which nobody needs
 * (41 ms of a 455 ms MobileNet step at 128 px). Without a bias, the plain Conv2D op gives the
 * same output, and its registered gradient computes only what the tape asks for.
 */
export function patchConv2DLayer(backends: ReadonlySet<string>): void {
  if (convLayerPatched) return;
  convLayerPatched = true;
  const proto = Object.getPrototypeOf(tf.layers.conv2d({ filters: 1, kernelSize: 1 })) as Conv2DLayerInternals;
  const original = proto.call;
  proto.call = function (this: Conv2DLayerInternals, inputs, kwargs) {
    const x = Array.isArray(inputs) ? inputs[0] : inputs;
    if (
      (Array.isArray(inputs) && inputs.length !== 1) ||
      this.rank !== 2 ||
      this.bias !== null ||
      x.rank !== 4 ||
      this.dataFormat !== 'channelsLast' ||
      (this.padding !== 'same' && this.padding !== 'valid') ||
      !backends.has(tf.getBackend())
    ) {
      return original.call(this, inputs, kwargs);
    }
    return tf.tidy(() => {
      const y = tf.conv2d(x as tf.Tensor4D, this.kernel.read() as tf.Tensor4D, this.strides, this.padding as 'same' | 'valid', 'NHWC', this.dilationRate);
      return this.activation ? this.activation.apply(y) : y;
    });
  };
}
