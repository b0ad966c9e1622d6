import sharp from 'sharp';
import * as tf from '@tensorflow/tfjs';
import { InvalidInputError } from './errors.js';
import type { ModelInspection } from './types.js';

/** Eval images are resized so a centre crop keeps 87.5% of the shorter side (the usual 224-of-256). */
export const EVAL_CROP_FRACTION = 0.875;

/** Decoded RGB images of one side length, kept as bytes so thousands fit in memory. */
export interface ImageSet {
  side: number;
  count: number;
  /** count × side × side × 3 bytes, row-major HWC per image. */
  pixels: Uint8Array;
  labels: Int32Array;
  paths: string[];
}

export type Normalization = ModelInspection['normalization'];

/** Side length of stored training images: random crops are taken from it, then resized to imageSize. */
export function trainStoreSide(imageSize: number): number {
  return Math.round(imageSize / EVAL_CROP_FRACTION);
}

/**
 * Decode images with sharp. `eval`: resize the shorter side to imageSize/0.875 and centre-crop
 * imageSize (deterministic). `train`: resize the shorter side to imageSize/0.875 and keep the
 * centre square, from which augmentation crops later.
 */
export async function decodeImages(
  items: { path: string; label: number }[],
  imageSize: number,
  mode: 'eval' | 'train',
  concurrency = 8,
): Promise<ImageSet> {
  const outer = trainStoreSide(imageSize);
  const side = mode === 'eval' ? imageSize : outer;
  const bytesPerImage = side * side * 3;
  const pixels = new Uint8Array(items.length * bytesPerImage);
  const failures: string[] = [];
  let next = 0;
  const work = async () => {
    while (next < items.length) {
      const i = next++;
      const path = items[i].path;
      try {
        let pipeline = sharp(path, { failOn: 'truncated' }).rotate().removeAlpha().toColourspace('srgb').resize(outer, outer, { fit: 'cover', kernel: 'linear' });
        if (mode === 'eval') {
          const offset = Math.floor((outer - imageSize) / 2);
          pipeline = pipeline.extract({ left: offset, top: offset, width: imageSize, height: imageSize });
        }
        const { data, info } = await pipeline.raw().toBuffer({ resolveWithObject: true });
        if (info.channels !== 3 || data.length !== bytesPerImage) throw new Error(`unexpected decoded size ${info.width}x${info.height}x${info.channels}`);
        pixels.set(data, i * bytesPerImage);
      } catch (err) {
        failures.push(`${path}: ${(err as Error).message}`);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, Math.max(1, items.length)) }, work));
  if (failures.length) {
    const shown = failures.slice(0, 5).join('; ');
    throw new InvalidInputError('data', `data: ${failures.length} image(s) cannot be decoded: ${shown}${failures.length > 5 ? '; …' : ''}`);
  }
  return { side, count: items.length, pixels, labels: Int32Array.from(items.map((i) => i.label)), paths: items.map((i) => i.path) };
}

/**
 * Map bytes in [0, 255] to the model's input range.
 * Shape: [B, H, W, 3] → [B, H, W, 3] float32.
 */
export function normalize(x: tf.Tensor4D, kind: Normalization): tf.Tensor4D {
  return tf.tidy(() => {
    const f = x.toFloat();
    if (kind === 'minus1to1') return f.div(127.5).sub(1);
    if (kind === 'zero1') return f.div(255);
    const mean = tf.tensor1d([0.485 * 255, 0.456 * 255, 0.406 * 255]);
    const std = tf.tensor1d([0.229 * 255, 0.224 * 255, 0.225 * 255]);
    return f.sub(mean).div(std);
  }) as tf.Tensor4D;
}

/** Stack images `indices` of `set` into a uint8-valued int32 tensor. Shape: [B, side, side, 3]. */
export function gather(set: ImageSet, indices: ArrayLike<number>): tf.Tensor4D {
  const per = set.side * set.side * 3;
  const out = new Int32Array(indices.length * per);
  for (let b = 0; b < indices.length; b++) {
    const start = indices[b] * per;
    const src = set.pixels.subarray(start, start + per);
    const dst = b * per;
    for (let k = 0; k < per; k++) out[dst + k] = src[k];
  }
  return tf.tensor4d(out, [indices.length, set.side, set.side, 3], 'int32');
}

/** A normalised eval batch. Shape: [B, side, side, 3] float32. */
export function evalBatch(set: ImageSet, indices: ArrayLike<number>, kind: Normalization): tf.Tensor4D {
  return tf.tidy(() => normalize(gather(set, indices), kind));
}

/**
 * Random-resized-crop boxes (area fraction in [scaleMin, 1], aspect ratio in [3/4, 4/3]) with a
 * horizontal flip half of the time. A box with x1 > x2 makes cropAndResize mirror the crop.
 * Returns normalised [y1, x1, y2, x2] per image.
 */
export function randomCropBoxes(count: number, scaleMin: number, rng: () => number): Float32Array {
  const boxes = new Float32Array(count * 4);
  const logLow = Math.log(3 / 4);
  const logHigh = Math.log(4 / 3);
  for (let i = 0; i < count; i++) {
    let w = 1;
    let h = 1;
    for (let attempt = 0; attempt < 10; attempt++) {
      const area = scaleMin + (1 - scaleMin) * rng();
      const ratio = Math.exp(logLow + (logHigh - logLow) * rng());
      const cw = Math.sqrt(area * ratio);
      const ch = Math.sqrt(area / ratio);
      if (cw <= 1 && ch <= 1) {
        w = cw;
        h = ch;
        break;
      }
    }
    const y1 = (1 - h) * rng();
    const x1 = (1 - w) * rng();
    const flip = rng() < 0.5;
    boxes.set(flip ? [y1, x1 + w, y1 + h, x1] : [y1, x1, y1 + h, x1 + w], i * 4);
  }
  return boxes;
}

/**
 * A normalised training batch from stored training images: random resized crops and flips when
 * `rng` is given, the eval centre crop otherwise. Shape: [B, imageSize, imageSize, 3] float32.
 */
export function trainBatch(
  set: ImageSet,
  indices: ArrayLike<number>,
  imageSize: number,
  kind: Normalization,
  augment: { rng: () => number; scaleMin: number } | null,
): tf.Tensor4D {
  if (!augment) {
    // The same centre crop as the eval pipeline, taken exactly.
    const offset = Math.floor((set.side - imageSize) / 2);
    return tf.tidy(() => normalize(gather(set, indices).slice([0, offset, offset, 0], [-1, imageSize, imageSize, 3]), kind));
  }
  const boxes = randomCropBoxes(indices.length, augment.scaleMin, augment.rng);
  return tf.tidy(() => {
    const raw = gather(set, indices).toFloat();
    const cropped = tf.image.cropAndResize(
      raw,
      tf.tensor2d(boxes, [indices.length, 4]),
      tf.range(0, indices.length, 1, 'int32') as tf.Tensor1D,
      [imageSize, imageSize],
      'bilinear',
    );
    return normalize(cropped as tf.Tensor4D, kind);
  });
}
