import * as tf from '@tensorflow/tfjs';
import { InvalidInputError } from './errors.js';
import { loadLayersModel, readModelJson } from './model-io.js';
import { findHead, inspectModelJson, resolveImageSize } from './model-spec.js';
import { deriveSeed } from './rng.js';
import type { ModelInspection } from './types.js';

/**
 * A pre-trained classifier cut at its feature layer, with the kept source head G and a new
 * target head H: z_s = G(F(x)), z_t = H(F(x)).
 */
export interface CoTuningNet {
  /** F: input → feature layer of the pre-trained model (its layers, its weights). */
  backbone: tf.LayersModel;
  /** G as a dense layer: kernel [D, S], bias [S]. */
  sourceKernel: tf.Variable;
  sourceBias: tf.Variable;
  /** H: kernel [D, C], bias [C]. */
  targetKernel: tf.Variable;
  targetBias: tf.Variable;
  inspection: ModelInspection;
  imageSize: number;
  numClasses: number;
}

export interface BuildNetOptions {
  numClasses: number;
  /** Square input size; default the model's own. */
  imageSize?: number;
  headLayer?: string;
  seed: number;
}

/** Load the pre-trained model from `modelDir` and split it into backbone, source head and a fresh target head. */
export async function buildNet(modelDir: string, options: BuildNetOptions): Promise<CoTuningNet> {
  const json = await readModelJson(modelDir);
  const inspection = inspectModelJson(json, options.headLayer);
  const imageSize = resolveImageSize(inspection, options.imageSize);
  const full = await loadLayersModel(modelDir, imageSize);
  const split = findHead(json, options.headLayer);
  const featureLayer = full.layers.find((l) => l.name === split.featureLayer);
  if (!featureLayer) throw new InvalidInputError('model', `model: feature layer for head "${split.headLayer}" not found`);
  const backbone = tf.model({ inputs: full.inputs, outputs: featureLayer.output as tf.SymbolicTensor, name: 'backbone' });
  const [kernel, bias] = full.getLayer(split.headLayer).getWeights();
  const D = split.featureDim;
  const S = split.numSourceClasses;
  const sourceKernel = tf.variable(kernel.reshape([D, S]), true);
  const sourceBias = tf.variable(bias.reshape([S]), true);
  // Target head: weights N(0, 0.01²), bias 0, as in the reference implementation; seeded.
  const targetKernel = tf.variable(
    tf.randomNormal([D, options.numClasses], 0, 0.01, 'float32', deriveSeed(options.seed, 'target-head') % 2 ** 31),
    true,
  );
  const targetBias = tf.variable(tf.zeros([options.numClasses]), true);
  return { backbone, sourceKernel, sourceBias, targetKernel, targetBias, inspection, imageSize, numClasses: options.numClasses };
}

/** Backbone features, flattened. Shape: [B, H, W, 3] → [B, D]. */
export function features(net: CoTuningNet, x: tf.Tensor4D, training: boolean): tf.Tensor2D {
  const out = net.backbone.apply(x, { training }) as tf.Tensor;
  return out.reshape([x.shape[0], net.inspection.featureDim]) as tf.Tensor2D;
}

/** Shape: [B, D] → [B, S]. */
export function sourceLogits(net: CoTuningNet, f: tf.Tensor2D): tf.Tensor2D {
  return tf.add(tf.matMul(f, net.sourceKernel), net.sourceBias) as tf.Tensor2D;
}

/** Shape: [B, D] → [B, C]. */
export function targetLogits(net: CoTuningNet, f: tf.Tensor2D): tf.Tensor2D {
  return tf.add(tf.matMul(f, net.targetKernel), net.targetBias) as tf.Tensor2D;
}

/** Trainable variables by learning-rate group, in a fixed order (optimiser state is positional). */
export interface VariableGroups {
  backbone: tf.Variable[];
  sourceHead: tf.Variable[];
  targetHead: tf.Variable[];
}

/**
 * The variables a method trains. Fine-tuning drops the source head; `freezeBelow` leaves every
 * backbone layer before the named one out, so no gradient is computed or stored for them.
 */
export function trainableGroups(net: CoTuningNet, withSourceHead: boolean, freezeBelow?: string): VariableGroups {
  let layers = net.backbone.layers;
  if (freezeBelow) {
    const at = layers.findIndex((l) => l.name === freezeBelow);
    if (at < 0) throw new InvalidInputError('hyperparameters.freezeBelow', `hyperparameters.freezeBelow: no layer named "${freezeBelow}" in the backbone`);
    layers = layers.slice(at);
  }
  const backbone = layers.flatMap((l) => l.trainableWeights.map((w) => w.read() as tf.Variable));
  return {
    backbone,
    sourceHead: withSourceHead ? [net.sourceKernel, net.sourceBias] : [],
    targetHead: [net.targetKernel, net.targetBias],
  };
}

/** Every tensor that defines the net's state (BN moving statistics included), in a fixed order. */
export function stateVariables(net: CoTuningNet): tf.Variable[] {
  return [
    ...net.backbone.weights.map((w) => w.read() as tf.Variable),
    net.sourceKernel,
    net.sourceBias,
    net.targetKernel,
    net.targetBias,
  ];
}

/** Copies of the current state (cheap: TF.js copies on write). */
export function snapshot(net: CoTuningNet): tf.Tensor[] {
  return stateVariables(net).map((v) => v.clone());
}

export function restore(net: CoTuningNet, values: tf.Tensor[]): void {
  stateVariables(net).forEach((v, i) => v.assign(values[i]));
}

/**
 * The fine-tuned target classifier as a standalone LayersModel (input → softmax over target
 * classes) sharing the backbone's layers, ready to save.
 */
export function exportTargetModel(net: CoTuningNet): tf.LayersModel {
  const feature = net.backbone.outputs[0];
  const flat = feature.shape.length > 2 ? (tf.layers.flatten({ name: 'target_flatten' }).apply(feature) as tf.SymbolicTensor) : feature;
  const head = tf.layers.dense({ units: net.numClasses, activation: 'softmax', name: 'target_head' });
  const output = head.apply(flat) as tf.SymbolicTensor;
  head.setWeights([net.targetKernel, net.targetBias]);
  return tf.model({ inputs: net.backbone.inputs, outputs: output, name: 'cotune_target_classifier' });
}

export function disposeNet(net: CoTuningNet): void {
  net.backbone.dispose();
  tf.dispose([net.sourceKernel, net.sourceBias, net.targetKernel, net.targetBias]);
}
