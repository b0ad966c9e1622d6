import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { InvalidInputError } from './errors.js';
import { readModelJson, weightBytes, type ModelJson } from './model-spec.js';

export { readModelJson, type ModelJson };

/**
 * An IOHandler reading model.json + weight shards from a directory. TF.js without tfjs-node
 * has no file:// loader, so this is the only way to load from disk. `transformTopology` lets
 * the caller change the topology before the model is built (e.g. the input size).
 */
export function directoryLoader(
  dir: string,
  transformTopology?: (topology: Record<string, unknown>) => Record<string, unknown>,
): tf.io.IOHandler {
  return {
    load: async () => {
      const json = await readModelJson(dir);
      const topology = transformTopology ? transformTopology(structuredClone(json.modelTopology)) : json.modelTopology;
      return tf.io.getModelArtifactsForJSON({ ...json, modelTopology: topology }, async (manifest) => {
        const buffers: Buffer[] = [];
        for (const group of manifest) {
          for (const p of group.paths) {
            if (p.includes('..') || p.startsWith('/')) throw new InvalidInputError('model', `model: weight path "${p}" leaves the model directory`);
            try {
              buffers.push(await readFile(join(dir, p)));
            } catch {
              throw new InvalidInputError('model', `model: weight file ${join(dir, p)} is missing`);
            }
          }
        }
        const all = Buffer.concat(buffers);
        const expected = manifest.flatMap((g) => g.weights).reduce((n, w) => n + weightBytes(w), 0);
        if (all.byteLength !== expected) {
          throw new InvalidInputError('model', `model: weight files hold ${all.byteLength} bytes but model.json describes ${expected}`);
        }
        const data = all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength) as ArrayBuffer;
        return [manifest.flatMap((g) => g.weights), data];
      });
    },
  };
}

/** Load a LayersModel from a directory, optionally overriding the square input size. */
export async function loadLayersModel(dir: string, inputSize?: number): Promise<tf.LayersModel> {
  const transform = inputSize === undefined ? undefined : (t: Record<string, unknown>) => withInputSize(t, inputSize);
  return tf.loadLayersModel(directoryLoader(dir, transform));
}

/** Rewrite the InputLayer's batch_input_shape so the network is built for `size`×`size` images. */
function withInputSize(topology: Record<string, unknown>, size: number): Record<string, unknown> {
  const modelConfig = (topology.model_config ?? topology) as { config?: { layers?: unknown[] } };
  for (const layer of (modelConfig.config?.layers ?? []) as { class_name: string; config: Record<string, unknown> }[]) {
    const key = layer.config.batch_input_shape ? 'batch_input_shape' : layer.config.batch_shape ? 'batch_shape' : null;
    if (layer.class_name === 'InputLayer' && key) {
      const shape = layer.config[key] as (number | null)[];
      if (shape.length === 4) layer.config[key] = [shape[0], size, size, shape[3]];
    }
  }
  return topology;
}

/** Save a LayersModel as model.json + one weights.bin, loadable by tf.loadLayersModel and by loadLayersModel. */
export async function saveLayersModel(
  model: tf.LayersModel,
  dir: string,
  userDefinedMetadata?: { [key: string]: object },
): Promise<string[]> {
  await mkdir(dir, { recursive: true });
  await model.save(
    tf.io.withSaveHandler(async (artifacts) => {
      const weightData = artifacts.weightData;
      const bytes = weightData === undefined ? new ArrayBuffer(0) : tf.io.CompositeArrayBuffer.join(weightData);
      await writeFile(join(dir, 'weights.bin'), Buffer.from(bytes));
      const json: ModelJson = {
        modelTopology: artifacts.modelTopology as Record<string, unknown>,
        format: artifacts.format ?? 'layers-model',
        generatedBy: artifacts.generatedBy,
        convertedBy: artifacts.convertedBy ?? null,
        weightsManifest: [{ paths: ['weights.bin'], weights: artifacts.weightSpecs ?? [] }],
        ...(userDefinedMetadata ? { userDefinedMetadata } : {}),
      };
      await writeFile(join(dir, 'model.json'), JSON.stringify(json));
      return { modelArtifactsInfo: tf.io.getModelArtifactsInfoForJSON(artifacts) };
    }),
  );
  return ['model.json', 'weights.bin'];
}
