import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type * as tf from '@tensorflow/tfjs';
import { InvalidInputError } from './errors.js';
import type { ModelInspection } from './types.js';

/** model.json as written by the TF.js converter and by saveLayersModel. */
export interface ModelJson {
  modelTopology: Record<string, unknown>;
  weightsManifest: { paths: string[]; weights: tf.io.WeightsManifestEntry[] }[];
  format?: string;
  generatedBy?: string;
  convertedBy?: string | null;
  userDefinedMetadata?: { [key: string]: object };
}

export async function readModelJson(dir: string): Promise<ModelJson> {
  const path = join(dir, 'model.json');
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch {
    throw new InvalidInputError('model', `model: cannot read ${path}`);
  }
  let json: ModelJson;
  try {
    json = JSON.parse(text) as ModelJson;
  } catch (err) {
    throw new InvalidInputError('model', `model: ${path} is not valid JSON (${(err as Error).message})`);
  }
  if (!json.modelTopology || !Array.isArray(json.weightsManifest)) {
    throw new InvalidInputError('model', `model: ${path} is not a TF.js LayersModel (needs modelTopology and weightsManifest)`);
  }
  return json;
}



interface LayerJson {
  class_name: string;
  name?: string;
  config: Record<string, unknown>;
  inbound_nodes?: unknown[];
}

/** Layers that only reshape or regularise between the feature and the classifier. */
const PASS_THROUGH = new Set(['Reshape', 'Dropout', 'Flatten', 'SpatialDropout1D', 'SpatialDropout2D', 'GaussianDropout']);

function layerName(layer: LayerJson): string {
  return (layer.name ?? layer.config.name) as string;
}

/** Names of the layers feeding `layer` (first inbound node), for both Keras 2 and TF.js topologies. */
function inboundNames(layer: LayerJson): string[] {
  const nodes = layer.inbound_nodes ?? [];
  const first = nodes[0];
  if (!first) return [];
  if (Array.isArray(first)) return (first as unknown[][]).map((entry) => String(entry[0]));
  const args = (first as { args?: { config?: { keras_history?: unknown[] } }[] }).args ?? [];
  return args.map((a) => String(a.config?.keras_history?.[0]));
}

function topologyLayers(json: ModelJson): { layers: LayerJson[]; sequential: boolean; outputs: string[] } {
  const topology = json.modelTopology as { model_config?: unknown; class_name?: string; config?: unknown };
  const modelConfig = (topology.model_config ?? topology) as { class_name?: string; config?: unknown };
  const config = modelConfig.config as { layers?: LayerJson[]; output_layers?: unknown[][] } | LayerJson[] | undefined;
  if (modelConfig.class_name === 'Sequential') {
    const layers = Array.isArray(config) ? config : (config?.layers ?? []);
    return { layers, sequential: true, outputs: layers.length ? [layerName(layers[layers.length - 1])] : [] };
  }
  if (!config || Array.isArray(config) || !config.layers) throw new InvalidInputError('model', 'model: model.json has no layer list');
  return { layers: config.layers, sequential: false, outputs: (config.output_layers ?? []).map((o) => String(o[0])) };
}

/** The classifier split of a pre-trained model: feature layer → source head → softmax. */
export interface HeadSplit {
  headLayer: string;
  headKind: 'dense' | 'conv1x1';
  /** Layer whose output (flattened) is the feature fed to the head. */
  featureLayer: string;
  featureDim: number;
  numSourceClasses: number;
}

/**
 * Find the source classifier: by default the last Dense or 1x1 Conv2D before the final softmax,
 * or the layer named `headLayer`. Throws "no usable source head" when the model has none.
 */
export function findHead(json: ModelJson, headLayer?: string): HeadSplit {
  // Errors name the input to fix: the head-layer option when one was given, else the model.
  const field = headLayer ? 'hyperparameters.headLayer' : 'model';
  const fail = (message: string) => new InvalidInputError(field, message);
  const { layers, sequential, outputs } = topologyLayers(json);
  const byName = new Map(layers.map((l) => [layerName(l), l]));
  const previous = (layer: LayerJson): LayerJson | undefined => {
    if (sequential) {
      const i = layers.indexOf(layer);
      return i > 0 ? layers[i - 1] : undefined;
    }
    const names = inboundNames(layer);
    return names.length === 1 ? byName.get(names[0]) : undefined;
  };
  const weightShape = (name: string): number[] | undefined =>
    json.weightsManifest.flatMap((g) => g.weights).find((w) => w.name === `${name}/kernel` || w.name.endsWith(`/${name}/kernel`))?.shape;

  let head: LayerJson | undefined;
  if (headLayer) {
    head = byName.get(headLayer);
    if (!head) throw fail(`model: head layer "${headLayer}" not found in model.json`);
  } else {
    if (outputs.length !== 1) throw fail('model: no usable source head (the model must have exactly one output)');
    let cursor = byName.get(outputs[0]);
    let sawSoftmax = false;
    while (cursor) {
      const kind = cursor.class_name;
      const activation = cursor.config.activation;
      if ((kind === 'Activation' && activation === 'softmax') || kind === 'Softmax') sawSoftmax = true;
      else if (kind === 'Dense' || kind === 'Conv2D') {
        if (activation === 'softmax') sawSoftmax = true;
        if (!sawSoftmax) break;
        head = cursor;
        break;
      } else if (!PASS_THROUGH.has(kind)) break;
      cursor = previous(cursor);
    }
    if (!head) {
      throw fail(
        'model: no usable source head: expected a Dense or 1x1 Conv2D classifier followed by a softmax at the end of the model',
      );
    }
  }
  const name = layerName(head);
  const shape = weightShape(name);
  let headKind: HeadSplit['headKind'];
  if (head.class_name === 'Dense' && shape?.length === 2) headKind = 'dense';
  else if (head.class_name === 'Conv2D' && shape?.length === 4 && shape[0] === 1 && shape[1] === 1) headKind = 'conv1x1';
  else throw fail(`model: no usable source head: layer "${name}" is not a Dense or 1x1 Conv2D with weights`);
  if (head.config.use_bias === false) throw fail(`model: no usable source head: layer "${name}" has no bias`);
  const featureDim = shape[shape.length - 2];
  const numSourceClasses = shape[shape.length - 1];
  if (numSourceClasses < 2) throw fail(`model: no usable source head: layer "${name}" has ${numSourceClasses} output`);

  let feature = previous(head);
  while (feature && PASS_THROUGH.has(feature.class_name)) feature = previous(feature);
  if (!feature) throw fail(`model: no usable source head: cannot find the feature layer feeding "${name}"`);
  return { headLayer: name, headKind, featureLayer: layerName(feature), featureDim, numSourceClasses };
}

/** Input shape [H, W, C] of the model's (single) input layer. */
export function modelInputShape(json: ModelJson): number[] {
  const { layers } = topologyLayers(json);
  const input = layers.find((l) => l.class_name === 'InputLayer') ?? layers[0];
  const shape = (input?.config.batch_input_shape ?? input?.config.batch_shape) as (number | null)[] | undefined;
  if (!shape || shape.length !== 4) throw new InvalidInputError('model', 'model: expected an image model with input [batch, height, width, channels]');
  return shape.slice(1).map((d) => d ?? -1);
}

/**
 * Pixel normalisation for the model. Models may declare it in
 * userDefinedMetadata.cotune.normalization; otherwise Keras-style x/127.5 − 1 (MobileNet and friends).
 */
export function modelNormalization(json: ModelJson): ModelInspection['normalization'] {
  const declared = (json.userDefinedMetadata?.cotune as { normalization?: string } | undefined)?.normalization;
  if (declared === 'minus1to1' || declared === 'zero1' || declared === 'imagenet') return declared;
  return 'minus1to1';
}

export function inspectModelJson(json: ModelJson, headLayer?: string): ModelInspection {
  const split = findHead(json, headLayer);
  return {
    inputShape: modelInputShape(json),
    headLayer: split.headLayer,
    headKind: split.headKind,
    featureDim: split.featureDim,
    numSourceClasses: split.numSourceClasses,
    normalization: modelNormalization(json),
  };
}

/** The requested square input size, or the model's own; a model without a fixed size needs one requested. */
export function resolveImageSize(inspection: ModelInspection, requested?: number): number {
  const size = requested ?? inspection.inputShape[0];
  if (!(size > 0)) throw new InvalidInputError('hyperparameters.imageSize', 'hyperparameters.imageSize: the model has no fixed input size; set one');
  return size;
}

/** Bytes one weightsManifest entry occupies in the weight files (quantised entries are 1 or 2 bytes wide). */
export function weightBytes(w: { shape: number[]; dtype: string; quantization?: { dtype?: string } }): number {
  const count = w.shape.reduce((a, b) => a * b, 1);
  const width = w.quantization ? (w.quantization.dtype === 'uint8' ? 1 : 2) : w.dtype === 'bool' ? 1 : 4;
  return count * width;
}
