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

/** A normalised eval batch: the stored images, mapped by byteMapping. Shape: [B, side, side, 3] float32. */
export function evalBatch(set: ImageSet, indices: ArrayLike<number>, kind: Normalization): tf.Tensor4D {
  return centreCrops(set, indices, set.side, kind);
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
 * Per-channel v·scale + offset that maps bytes in [0, 255] to the model's input range:
 * v/127.5 − 1, v/255, or (v − 255·mean)/(255·std) with ImageNet's channel mean and std.
 */
function byteMapping(kind: Normalization): { scale: number[]; offset: number[] } {
  if (kind === 'minus1to1') return { scale: [1 / 127.5, 1 / 127.5, 1 / 127.5], offset: [-1, -1, -1] };
  if (kind === 'zero1') return { scale: [1 / 255, 1 / 255, 1 / 255], offset: [0, 0, 0] };
  const mean = [0.485 * 255, 0.456 * 255, 0.406 * 255];
  const std = [0.229 * 255, 0.224 * 255, 0.225 * 255];
  return { scale: std.map((s) => 1 / s), offset: mean.map((m, c) => -m / std[c]) };
}

/**
 * A normalised training batch from stored training images: random resized crops and flips when
 * `rng` is given, the eval centre crop otherwise. Built in one pass from the stored bytes, as
 * tf.image.cropAndResize (bilinear) then the normalisation in tf ops would build it: those ops took about 50 ms per
 * batch of 32 at 128 px on WASM (gather, cast, crop, two arithmetic passes), a quarter of a
 * training step. Shape: [B, imageSize, imageSize, 3] float32.
 */
export function trainBatch(
  set: ImageSet,
  indices: ArrayLike<number>,
  imageSize: number,
  kind: Normalization,
  augment: { rng: () => number; scaleMin: number } | null,
): tf.Tensor4D {
  // The same centre crop as the eval pipeline, taken exactly.
  if (!augment) return centreCrops(set, indices, imageSize, kind);
  const { scale, offset } = byteMapping(kind);
  const out = new Float32Array(indices.length * imageSize * imageSize * 3);
  const boxes = randomCropBoxes(indices.length, augment.scaleMin, augment.rng);
  for (let b = 0; b < indices.length; b++) {
    cropResizeInto(set, indices[b], boxes.subarray(b * 4, b * 4 + 4), imageSize, scale, offset, out, b * imageSize * imageSize * 3);
  }
  return tf.tensor4d(out, [indices.length, imageSize, imageSize, 3], 'float32');
}

/** The centre size × size of images `indices`, normalised. Shape: [B, size, size, 3] float32. */
function centreCrops(set: ImageSet, indices: ArrayLike<number>, size: number, kind: Normalization): tf.Tensor4D {
  if (size > set.side) throw new RangeError(`imageSize ${size} is larger than the stored images (${set.side} px)`);
  const { scale, offset } = byteMapping(kind);
  const [s0, s1, s2] = scale;
  const [f0, f1, f2] = offset;
  const px = set.pixels;
  const start = Math.floor((set.side - size) / 2);
  const out = new Float32Array(indices.length * size * size * 3);
  let o = 0;
  for (let b = 0; b < indices.length; b++) {
    for (let y = 0; y < size; y++) {
      let i = ((indices[b] * set.side + start + y) * set.side + start) * 3;
      for (let x = 0; x < size; x++, i += 3, o += 3) {
        out[o] = px[i] * s0 + f0;
        out[o + 1] = px[i + 1] * s1 + f1;
        out[o + 2] = px[i + 2] * s2 + f2;
      }
    }
  }
  return tf.tensor4d(out, [indices.length, size, size, 3], 'float32');
}

/**
 * Image `index` of `set` cropped to the normalised box [y1, x1, y2, x2] and resized to
 * size × size with TF's cropAndResize sampling (bilinear; x1 > x2 mirrors), each value mapped by
 * v·scale + offset, written to `out` from `at`. Samples outside the image are 0 before mapping.
 */
function cropResizeInto(
  set: ImageSet,
  index: number,
  box: Float32Array,
  size: number,
  scale: number[],
  offset: number[],
  out: Float32Array,
  at: number,
): void {
  const last = set.side - 1;
  const [y1, x1, y2, x2] = box;
  const base = index * set.side * set.side * 3;
  const px = set.pixels;
  const [s0, s1, s2] = scale;
  const [f0, f1, f2] = offset;
  // cropAndResize's sample positions: y1·(H − 1) + y·(y2 − y1)·(H − 1)/(size − 1), or the box centre for size 1.
  const yFirst = size > 1 ? y1 * last : 0.5 * (y1 + y2) * last;
  const yStep = size > 1 ? ((y2 - y1) * last) / (size - 1) : 0;
  const xFirst = size > 1 ? x1 * last : 0.5 * (x1 + x2) * last;
  const xStep = size > 1 ? ((x2 - x1) * last) / (size - 1) : 0;
  const left = new Int32Array(size);
  const right = new Int32Array(size);
  const xLerp = new Float64Array(size);
  const inside = new Uint8Array(size);
  for (let x = 0; x < size; x++) {
    const p = xFirst + x * xStep;
    inside[x] = p >= 0 && p <= last ? 1 : 0;
    left[x] = Math.floor(p) * 3;
    right[x] = Math.ceil(p) * 3;
    xLerp[x] = p - Math.floor(p);
  }
  let o = at;
  for (let y = 0; y < size; y++) {
    const p = yFirst + y * yStep;
    if (p < 0 || p > last) {
      for (let x = 0; x < size; x++) for (let c = 0; c < 3; c++) out[o++] = offset[c];
      continue;
    }
    const top = base + Math.floor(p) * set.side * 3;
    const bottom = base + Math.ceil(p) * set.side * 3;
    const yl = p - Math.floor(p);
    for (let x = 0; x < size; x++) {
      if (!inside[x]) {
        for (let c = 0; c < 3; c++) out[o++] = offset[c];
        continue;
      }
      const tl = top + left[x];
      const tr = top + right[x];
      const bl = bottom + left[x];
      const br = bottom + right[x];
      const xl = xLerp[x];
      // The three channels written out: a loop over them with the mapping in arrays ran at half the speed.
      let upper = px[tl] + (px[tr] - px[tl]) * xl;
      let lower = px[bl] + (px[br] - px[bl]) * xl;
      out[o] = (upper + (lower - upper) * yl) * s0 + f0;
      upper = px[tl + 1] + (px[tr + 1] - px[tl + 1]) * xl;
      lower = px[bl + 1] + (px[br + 1] - px[bl + 1]) * xl;
      out[o + 1] = (upper + (lower - upper) * yl) * s1 + f1;
      upper = px[tl + 2] + (px[tr + 2] - px[tl + 2]) * xl;
      lower = px[bl + 2] + (px[br + 2] - px[bl + 2]) * xl;
      out[o + 2] = (upper + (lower - upper) * yl) * s2 + f2;
      o += 3;
    }
  }
}
