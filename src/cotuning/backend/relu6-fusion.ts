import * as tf from '@tensorflow/tfjs';

/**
 * Batch norm followed by a relu6 Activation layer, fused in training mode: the batch-norm op
 * clamps its own output (XNNPACK's multiply-add clamps for free) and takes the ReLU6 mask in
 * its gradient, so the Activation layer passes the clamped tensor on unchanged. That saves a
 * full-size clamp forward, a full-size mask pass backward, the pre-clamp tensor the tape would
 * keep, and two kernel calls per layer (MobileNet has 27 such pairs).
 *
 * The graph rule that makes this safe: the batch norm is applied by a running model's graph
 * walk (not from inside another layer's own code), every consumer of its output, in every
 * graph the layer is part of, is a relu6 Activation layer, and the output is not an output of
 * a model being run. Then nobody can see the unclamped values. A fused output that
 * reaches the Activation by another route is clamped again, which changes nothing (clamping
 * and the mask are idempotent), so a miss costs speed, never correctness.
 */

/** The parts of tfjs-layers' graph used here (not in its public types). */
interface GraphNode {
  outboundLayer: tf.layers.Layer;
}
interface GraphLayer {
  outboundNodes?: GraphNode[];
}
interface ActivationLayerInternals {
  activation?: { getClassName(): string };
}
interface LayerInternals {
  apply(...args: unknown[]): unknown;
}
interface ModelInternals {
  outputLayers?: tf.layers.Layer[];
  call(inputs: tf.Tensor | tf.Tensor[], kwargs: Record<string, unknown>): tf.Tensor | tf.Tensor[];
}

/** Batch-norm outputs already clamped to [0, 6], for the Activation layer that follows. */
const clamped = new WeakSet<tf.Tensor>();
/** Models whose call is running (models nest): their outputs must stay what their layers compute. */
const running: ModelInternals[] = [];
/** Layers whose apply is running, innermost last (a model's graph walk applies each of its layers). */
const applying: unknown[] = [];

const isRelu6Activation = (layer: tf.layers.Layer): boolean =>
  layer.getClassName() === 'Activation' &&
  (layer as unknown as ActivationLayerInternals).activation?.getClassName() === 'relu6';

/**
 * True when `layer`'s output may come out clamped by relu6 (see the rule above). Called from
 * the layer's own call: the apply being run must be this layer's, directly inside the
 * innermost running model's.
 */
export function fusesRelu6(layer: tf.layers.Layer): boolean {
  const n = applying.length;
  if (
    running.length === 0 ||
    n < 2 ||
    applying[n - 1] !== layer ||
    applying[n - 2] !== running[running.length - 1]
  )
    return false;
  const consumers = (layer as unknown as GraphLayer).outboundNodes ?? [];
  if (consumers.length === 0 || !consumers.every((node) => isRelu6Activation(node.outboundLayer)))
    return false;
  return running.every((model) => !(model.outputLayers ?? []).includes(layer));
}

/** Marks `t` as the clamped output of a fused batch norm. */
export function markClamped(t: tf.Tensor): tf.Tensor {
  clamped.add(t);
  return t;
}

/** True when `t` came out of a fused batch norm already clamped to [0, 6]. */
export function isClamped(t: tf.Tensor): boolean {
  return clamped.has(t);
}

let patched = false;

/**
 * Tracks which models and layers are running, for fusesRelu6. Batch norm fuses only where a
 * model's call (tfjs-layers' graph walk) applies it, never when a layer is called on its own
 * or from inside another layer.
 */
export function patchModelCall(): void {
  if (patched) return;
  patched = true;
  const modelProto = Object.getPrototypeOf(tf.LayersModel.prototype) as ModelInternals;
  const originalCall = modelProto.call;
  modelProto.call = function (this: ModelInternals, inputs, kwargs) {
    running.push(this);
    try {
      return originalCall.call(this, inputs, kwargs);
    } finally {
      running.pop();
    }
  };
  // Every layer's apply (a model's too: models are layers), on their base class.
  const layerProto = Object.getPrototypeOf(modelProto) as LayerInternals;
  const originalApply = layerProto.apply;
  layerProto.apply = function (this: unknown, ...args: unknown[]) {
    applying.push(this);
    try {
      return originalApply.apply(this, args);
    } finally {
      applying.pop();
    }
  };
}
