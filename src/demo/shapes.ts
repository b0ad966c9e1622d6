/**
 * Procedural images for the embedded demo: coloured shapes with a texture on a noisy
 * background. Source classes are shape × base colour; target classes are the same shapes in
 * colours the source never saw (orange sits between red and yellow, …), so the source head's
 * answer for a target image is informative — the situation Co-Tuning exploits.
 */

// mulberry32, shared with the core library: identical on every platform, so a seed always draws the same pixels.
import { createRng } from '../cotuning/rng.js';

export { createRng };

export type Rgb = readonly [number, number, number];

export const SHAPES = ['circle', 'square', 'triangle', 'cross'] as const;
export type Shape = (typeof SHAPES)[number];

export const SOURCE_COLOURS: Record<string, Rgb> = {
  red: [215, 40, 40],
  green: [40, 175, 60],
  blue: [45, 70, 220],
  yellow: [230, 210, 40],
};

export const TARGET_COLOURS: Record<string, Rgb> = {
  orange: [240, 135, 30],
  purple: [150, 50, 200],
  cyan: [40, 200, 210],
};

export interface ClassSpec {
  name: string;
  shape: Shape;
  colour: Rgb;
}

function classes(colours: Record<string, Rgb>, sep: string): ClassSpec[] {
  return Object.entries(colours).flatMap(([colourName, colour]) =>
    SHAPES.map((shape) => ({ name: `${colourName}${sep}${shape}`, shape, colour })),
  );
}

/** 16 source classes, in the order of the source head's outputs. */
export const SOURCE_CLASSES: readonly ClassSpec[] = classes(SOURCE_COLOURS, ' ');
/** 12 target classes; names are folder-safe. */
export const TARGET_CLASSES: readonly ClassSpec[] = classes(TARGET_COLOURS, '-');


/** Seed for item `index` of stream `stream`, so every image is reproducible on its own. */
export function itemSeed(seed: number, stream: number, index: number): number {
  let h = (seed ^ Math.imul(stream + 1, 0x9e3779b1)) >>> 0;
  h = Math.imul(h ^ (index + 0x85ebca6b), 0xc2b2ae35) >>> 0;
  return (h ^ (h >>> 16)) >>> 0;
}

function inside(shape: Shape, u: number, v: number): boolean {
  switch (shape) {
    case 'circle':
      return u * u + v * v <= 1;
    case 'square':
      return Math.abs(u) <= 0.8 && Math.abs(v) <= 0.8;
    case 'triangle':
      // Equilateral, pointing up in shape space: three half-planes.
      return v <= 0.5 && 0.866 * u - 0.5 * v <= 0.5 && -0.866 * u - 0.5 * v <= 0.5;
    case 'cross':
      return (Math.abs(u) <= 0.3 && Math.abs(v) <= 1) || (Math.abs(v) <= 0.3 && Math.abs(u) <= 1);
  }
}

/**
 * Draw one `size`×`size` RGB image (interleaved bytes) of `spec`, fully determined by `seed`.
 * Position, scale, rotation, texture, colour jitter and background vary; shape and hue do not.
 */
export function drawShape(spec: ClassSpec, size: number, seed: number): Uint8Array {
  const rng = createRng(seed);
  const radius = size * (0.24 + 0.12 * rng());
  const margin = radius * 0.9;
  const cx = margin + rng() * (size - 2 * margin);
  const cy = margin + rng() * (size - 2 * margin);
  // Mild rotation: enough variety to need features, little enough to learn in a minute.
  const angle = (rng() - 0.5) * 0.7;
  const cos = Math.cos(angle);
  const sin = Math.sin(angle);
  const texture = Math.floor(rng() * 3); // 0 solid, 1 stripes, 2 dots
  const period = 3 + rng() * 3;
  const phase = rng() * Math.PI * 2;
  const gain = 0.8 + 0.3 * rng();
  const fg = spec.colour.map((c) => c * gain + (rng() - 0.5) * 30);
  const bgBase = 25 + rng() * 90;
  const bgTint = [rng(), rng(), rng()].map((t) => (t - 0.5) * 30);
  const gx = (rng() - 0.5) * 2;
  const gy = (rng() - 0.5) * 2;

  const out = new Uint8Array(size * size * 3);
  const sub = [0.25, 0.75]; // 2×2 supersampling keeps small shapes recognisable
  for (let y = 0; y < size; y += 1) {
    for (let x = 0; x < size; x += 1) {
      let cover = 0;
      for (const sy of sub) {
        for (const sx of sub) {
          const dx = (x + sx - cx) / radius;
          const dy = (y + sy - cy) / radius;
          if (inside(spec.shape, cos * dx + sin * dy, -sin * dx + cos * dy)) cover += 0.25;
        }
      }
      let shade = 1;
      if (texture === 1) shade = 0.88 + 0.12 * Math.sin(((x + y) * 2 * Math.PI) / period + phase);
      else if (texture === 2) shade = x % 4 < 2 !== y % 4 < 2 ? 0.85 : 1;
      const bg = bgBase + gx * (x - size / 2) + gy * (y - size / 2);
      const o = (y * size + x) * 3;
      for (let c = 0; c < 3; c += 1) {
        const noise = (rng() - 0.5) * 16;
        const value = cover * fg[c] * shade + (1 - cover) * (bg + bgTint[c]) + noise;
        out[o + c] = Math.max(0, Math.min(255, Math.round(value)));
      }
    }
  }
  return out;
}
