import * as tf from '@tensorflow/tfjs';
import { type ClassSpec, drawShape, itemSeed } from './shapes.js';

/** Name of the source classifier layer; the library finds it as the last Dense before the softmax. */
export const SOURCE_HEAD_LAYER = 'source_head';

/** Pixels are fed in [-1, 1], the MobileNet convention. */
export function toInputRange(pixels: Uint8Array, out: Float32Array, offset: number): void {
  for (let i = 0; i < pixels.length; i += 1) out[offset + i] = pixels[i] / 127.5 - 1;
}

/**
 * Draw `perClass` images of every class into one batch.
 * Shape: x [perClass·classes, size, size, 3] in [-1, 1]; y [perClass·classes] class indices.
 */
export function drawBatch(
  classes: readonly ClassSpec[],
  size: number,
  perClass: number,
  seed: number,
  stream: number,
): { x: tf.Tensor4D; y: tf.Tensor1D } {
  const n = classes.length * perClass;
  const pixels = size * size * 3;
  const x = new Float32Array(n * pixels);
  const y = new Float32Array(n);
  let i = 0;
  for (let k = 0; k < perClass; k += 1) {
    for (let c = 0; c < classes.length; c += 1) {
      toInputRange(drawShape(classes[c], size, itemSeed(seed, stream + c, k)), x, i * pixels);
      y[i] = c;
      i += 1;
    }
  }
  return { x: tf.tensor4d(x, [n, size, size, 3]), y: tf.tensor1d(y) };
}

/**
 * conv → batchnorm → relu (×4) → global average pool → Dense source head → softmax:
 * the layout of the ImageNet backbones the service takes, small enough to train in a minute.
 */
export function buildSourceModel(size: number, numClasses: number, seed: number): tf.LayersModel {
  const input = tf.input({ shape: [size, size, 3], name: 'input' });
  let h: tf.SymbolicTensor = input;
  // The last conv keeps 4×4 so its receptive field spans a whole shape.
  [16, 32, 48, 64].forEach((filters, i) => {
    const conv = tf.layers.conv2d({
      name: `conv${i + 1}`,
      filters,
      kernelSize: 3,
      strides: i < 3 ? 2 : 1,
      padding: 'same',
      useBias: false,
      kernelInitializer: tf.initializers.heNormal({ seed: seed + i }),
    });
    h = conv.apply(h) as tf.SymbolicTensor;
    h = tf.layers.batchNormalization({ name: `bn${i + 1}` }).apply(h) as tf.SymbolicTensor;
    h = tf.layers.reLU({ name: `relu${i + 1}` }).apply(h) as tf.SymbolicTensor;
  });
  h = tf.layers.globalAveragePooling2d({ name: 'pool' }).apply(h) as tf.SymbolicTensor;
  h = tf.layers
    .dense({
      name: SOURCE_HEAD_LAYER,
      units: numClasses,
      kernelInitializer: tf.initializers.glorotUniform({ seed: seed + 10 }),
    })
    .apply(h) as tf.SymbolicTensor;
  const output = tf.layers.softmax({ name: 'softmax' }).apply(h) as tf.SymbolicTensor;
  return tf.model({ inputs: input, outputs: output, name: 'demo_shapes_source' });
}

export interface PretrainOptions {
  size: number;
  classes: readonly ClassSpec[];
  perClass: number;
  seed: number;
  /** Training stops after this many seconds (checked after each batch) or maxEpochs. */
  seconds: number;
  maxEpochs: number;
  log?: (message: string) => void;
}

export interface PretrainReport {
  epochs: number;
  seconds: number;
  trainAccuracy: number;
  /** Top-1 on freshly drawn images the model never saw. */
  heldOutTop1: number;
  backend: string;
}

/** Top-1 accuracy of `model` on `perClass` new images of every class. */
export function evaluateOnFreshImages(
  model: tf.LayersModel,
  classes: readonly ClassSpec[],
  size: number,
  perClass: number,
  seed: number,
): number {
  const { x, y } = drawBatch(classes, size, perClass, seed, 1000);
  const correct = tf.tidy(() => {
    const predicted = (model.predict(x) as tf.Tensor).argMax(-1);
    return predicted.equal(y.cast('int32')).sum().arraySync() as number;
  });
  tf.dispose([x, y]);
  return correct / (classes.length * perClass);
}

/** Train the source classifier on procedurally drawn images with model.fit on the current backend. */
export async function pretrainSourceModel(
  model: tf.LayersModel,
  options: PretrainOptions,
): Promise<PretrainReport> {
  const backend = tf.getBackend();
  const { x, y } = drawBatch(options.classes, options.size, options.perClass, options.seed, 0);
  const started = Date.now();
  let epochs = 0;
  let trainAccuracy = 0;
  try {
    model.compile({
      optimizer: tf.train.adam(5e-3),
      loss: 'sparseCategoricalCrossentropy',
      metrics: ['accuracy'],
    });
    // Convolution gradients on WASM come from the project's registerFastGradients (selectBackend).
    await model.fit(x, y, {
      epochs: options.maxEpochs,
      batchSize: 32,
      // drawBatch already interleaves the classes; no shuffle (Math.random) keeps the weights reproducible.
      shuffle: false,
      verbose: 0,
      callbacks: {
        onBatchEnd: async () => {
          if ((Date.now() - started) / 1000 >= options.seconds) model.stopTraining = true;
        },
        onEpochEnd: async (epoch, logs) => {
          // A partial last epoch (stopped by the time budget) would report a misleading accuracy.
          if (model.stopTraining) return;
          epochs = epoch + 1;
          trainAccuracy = Number(logs?.acc ?? 0);
          const elapsed = (Date.now() - started) / 1000;
          options.log?.(
            `pre-training epoch ${epochs}: loss ${Number(logs?.loss ?? NaN).toFixed(3)}, accuracy ${trainAccuracy.toFixed(3)} (${elapsed.toFixed(0)} s)`,
          );
        },
      },
    });
  } finally {
    tf.dispose([x, y]);
  }
  const heldOutTop1 = evaluateOnFreshImages(model, options.classes, options.size, 10, options.seed + 1);
  return { epochs, seconds: (Date.now() - started) / 1000, trainAccuracy, heldOutTop1, backend };
}
