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
  /** Set for partial fine-tuning: the backbone cut where the trainable layers start. */
  split?: BackboneSplit;
}

/**
 * The backbone cut before one layer. `frozen` maps the images to the single tensor that crosses
 * the cut; `trainable` maps that tensor to the features. Both share the backbone's layers.
 */
export interface BackboneSplit {
  frozen: tf.LayersModel;
  trainable: tf.LayersModel;
}

/** The parts of tfjs-layers' SymbolicTensor used to walk the graph (not in its public types). */
interface GraphTensor {
  id: number;
  shape: (number | null)[];
  dtype: tf.DataType;
  sourceLayer: tf.layers.Layer;
  inputs: GraphTensor[];
  callArgs: Record<string, unknown>;
  outputTensorIndex?: number;
}

/**
 * The one tensor through which the backbone's layers before `layerName` feed the rest; an
 * InvalidInputError naming hyperparameters.freezeBelow when there is no such layer or cut.
 */
function cutBefore(backbone: tf.LayersModel, layerName: string): GraphTensor {
  const field = 'hyperparameters.freezeBelow';
  const at = backbone.layers.findIndex((l) => l.name === layerName);
  if (at < 0) throw new InvalidInputError(field, `${field}: no layer named "${layerName}" in the backbone`);
  const lower = new Set(backbone.layers.slice(0, at));
  const output = backbone.outputs[0] as unknown as GraphTensor;
  if (at === 0 || lower.has(output.sourceLayer)) {
    throw new InvalidInputError(field, `${field}: "${layerName}" leaves no trainable backbone layer to cut at`);
  }
  // Tensors made by frozen layers that trainable layers read: there must be exactly one.
  const crossing = new Map<number, GraphTensor>();
  const seen = new Set<number>();
  const walk = (t: GraphTensor): void => {
    if (seen.has(t.id)) return;
    seen.add(t.id);
    for (const input of t.inputs) {
      if (lower.has(input.sourceLayer)) crossing.set(input.id, input);
      else walk(input);
    }
  };
  walk(output);
  if (crossing.size !== 1) {
    throw new InvalidInputError(
      field,
      `${field}: "${layerName}" does not cut the network at one tensor (${crossing.size} cross the cut); name the first layer of a block`,
    );
  }
  const [cut] = crossing.values();
  return cut;
}

/** Checks that the backbone can be frozen below `layerName` (as splitBackbone would), changing nothing. */
export function checkFreezeBelow(net: CoTuningNet, layerName: string): void {
  cutBefore(net.backbone, layerName);
}

/**
 * Cuts the backbone before the layer named `layerName`. Every layer from that one on (in the
 * model's topological order) is trainable; the rest must feed them through one tensor (true
 * for any layer of a chain like MobileNet, and for a block's first layer in ResNet-style nets).
 */
export function splitBackbone(backbone: tf.LayersModel, layerName: string): BackboneSplit {
  const cut = cutBefore(backbone, layerName);
  const output = backbone.outputs[0] as unknown as GraphTensor;
  const frozen = tf.model({ inputs: backbone.inputs, outputs: cut as unknown as tf.SymbolicTensor, name: 'frozen_backbone' });

  // Re-apply the trainable layers to a new input in place of the cut tensor (weights are shared).
  const start = tf.input({ shape: cut.shape.slice(1) as number[], dtype: cut.dtype });
  const rebuilt = new Map<number, GraphTensor>([[cut.id, start as unknown as GraphTensor]]);
  const applied = new Map<string, GraphTensor | GraphTensor[]>();
  const rebuild = (t: GraphTensor): GraphTensor => {
    const done = rebuilt.get(t.id);
    if (done) return done;
    const inputs = t.inputs.map(rebuild);
    // One call per layer and input set, so a layer with several outputs is applied once.
    const key = `${t.sourceLayer.name}:${inputs.map((i) => i.id).join(',')}`;
    let out = applied.get(key);
    if (!out) {
      out = t.sourceLayer.apply((inputs.length === 1 ? inputs[0] : inputs) as unknown as tf.SymbolicTensor, t.callArgs) as unknown as
        | GraphTensor
        | GraphTensor[];
      applied.set(key, out);
    }
    const result = Array.isArray(out) ? out[t.outputTensorIndex ?? 0] : out;
    rebuilt.set(t.id, result);
    return result;
  };
  const features = rebuild(output) as unknown as tf.SymbolicTensor;
  const trainable = tf.model({ inputs: start, outputs: features, name: 'trainable_backbone' });
  return { frozen, trainable };
}

/**
 * The variables a method trains. Fine-tuning drops the source head; `freezeBelow` leaves every
 * backbone layer before the named one out: those layers keep their weights and batch-norm
 * statistics and run in inference mode outside the gradient tape (see `trainingFeatures`).
 */
export function trainableGroups(net: CoTuningNet, withSourceHead: boolean, freezeBelow?: string): VariableGroups {
  const split = freezeBelow ? splitBackbone(net.backbone, freezeBelow) : undefined;
  const layers = split ? split.trainable.layers : net.backbone.layers;
  const backbone = layers.flatMap((l) => l.trainableWeights.map((w) => w.read() as tf.Variable));
  return {
    backbone,
    sourceHead: withSourceHead ? [net.sourceKernel, net.sourceBias] : [],
    targetHead: [net.targetKernel, net.targetBias],
    split,
  };
}

/**
 * The frozen part of a split backbone, in inference mode. Call it outside the gradient tape:
 * nothing below the cut is recorded, saved for backprop or differentiated.
 * Shape: [B, H, W, 3] → the cut tensor's shape.
 */
export function frozenFeatures(split: BackboneSplit, x: tf.Tensor4D): tf.Tensor {
  return split.frozen.apply(x, { training: false }) as tf.Tensor;
}

/**
 * Backbone features in training mode. With `frozen` (the cut tensor from frozenFeatures and its
 * split) only the trainable part runs, from the cut on. Shape: [B, H, W, 3] → [B, D].
 */
export function trainingFeatures(net: CoTuningNet, x: tf.Tensor4D, frozen?: { split: BackboneSplit; cut: tf.Tensor }): tf.Tensor2D {
  if (!frozen) return features(net, x, true);
  const out = frozen.split.trainable.apply(frozen.cut, { training: true }) as tf.Tensor;
  return out.reshape([x.shape[0], net.inspection.featureDim]) as tf.Tensor2D;
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
