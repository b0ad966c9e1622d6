import * as tf from '@tensorflow/tfjs';

/**
 * Batch norm followed by a relu6 Activation layer, fused in training mode: the batch-norm op
 * clamps its own output (XNNPACK's multiply-add clamps for free) and takes the ReLU6 mask in
 * its gradient, so the Activation layer passes the clamped tensor on unchanged. That saves a
 * full-size clamp forward, a full-size mask pass backward, the pre-clamp tensor the tape would
 * keep, and two kernel calls per layer (MobileNet has 27 such pairs).
 *
 * The graph rule that makes this safe: every consumer of the batch-norm layer's output, in
 * every graph the layer is part of, is a relu6 Activation layer, and the output is not an
 * output of a model being run. Then nobody can see the unclamped values. A fused output that
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
interface ModelInternals {
  outputLayers?: tf.layers.Layer[];
  call(inputs: tf.Tensor | tf.Tensor[], kwargs: Record<string, unknown>): tf.Tensor | tf.Tensor[];
}

/** Batch-norm outputs already clamped to [0, 6], for the Activation layer that follows. */
const clamped = new WeakSet<tf.Tensor>();
/** Models whose call is running (models nest): their outputs must stay what their layers compute. */
const running: ModelInternals[] = [];

const isRelu6Activation = (layer: tf.layers.Layer): boolean =>
  layer.getClassName() === 'Activation' &&
  (layer as unknown as ActivationLayerInternals).activation?.getClassName() === 'relu6';

/** True when `layer`'s output may come out clamped by relu6 (see the rule above). */
export function fusesRelu6(layer: tf.layers.Layer): boolean {
  const consumers = (layer as unknown as GraphLayer).outboundNodes ?? [];
  if (consumers.length === 0 || !consumers.every((node) => isRelu6Activation(node.outboundLayer)))
    return false;
  return running.length > 0 && running.every((model) => !(model.outputLayers ?? []).includes(layer));
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
 * Tracks which models are running, for fusesRelu6. Batch norm fuses only inside a model's
 * call (where tfjs-layers walks the graph), never when a layer is called on its own.
 */
export function patchModelCall(): void {
  if (patched) return;
  patched = true;
  const proto = Object.getPrototypeOf(tf.LayersModel.prototype) as ModelInternals;
  const original = proto.call;
  proto.call = function (this: ModelInternals, inputs, kwargs) {
    running.push(this);
    try {
      return original.call(this, inputs, kwargs);
    } finally {
      running.pop();
    }
  };
}
