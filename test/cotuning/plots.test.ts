import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import sharp from 'sharp';
import {
  escapeXml,
  niceTicks,
  renderCurvesPng,
  renderCurvesSvg,
  renderRelationshipPng,
  renderRelationshipSvg,
  SERIES_COLOURS,
} from '../../src/cotuning/plots.js';
import { IMAGENET_CLASSES } from '../helpers/shared-data.js';

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'cotune-plots-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

async function decode(path: string) {
  const bytes = await readFile(path);
  assert.deepEqual(bytes.subarray(0, 8), PNG_SIGNATURE, 'PNG signature');
  const meta = await sharp(bytes).metadata();
  assert.equal(meta.format, 'png');
  const { data, info } = await sharp(bytes).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  const pixel = (x: number, y: number): [number, number, number] => {
    const o = (Math.round(y) * info.width + Math.round(x)) * info.channels;
    return [data[o], data[o + 1], data[o + 2]];
  };
  return { meta, info, data, pixel };
}

/** A relationship whose row t puts mass `hi` on source 3t and spreads the rest evenly. */
function peakedMatrix(C: number, S: number, hi: number): Float32Array {
  const m = new Float32Array(C * S).fill((1 - hi) / (S - 1));
  for (let t = 0; t < C; t++) m[t * S + ((3 * t) % S)] = hi;
  return m;
}

describe('renderRelationshipPng', () => {
  test('12 target classes with ImageNet names: valid PNG of the layout size; shade follows p', async () => {
    const names = JSON.parse(await readFile(IMAGENET_CLASSES, 'utf8')) as string[];
    const C = 12;
    const S = 1000;
    const m = peakedMatrix(C, S, 0.9);
    const path = join(dir, 'rel12.png');
    const layout = await renderRelationshipPng(path, {
      matrix: m,
      targetClasses: Array.from({ length: C }, (_, i) => `class ${i}`),
      sourceClasses: names,
    });
    const { meta, pixel } = await decode(path);
    assert.equal(meta.width, layout.width);
    assert.equal(meta.height, layout.height);
    assert.equal(layout.rowsShown, 12);
    // Top-1 cell (p = 0.9) must be much darker than top-2 (p ≈ 1e-4); sample a corner free of text.
    const c1 = layout.cell(0, 0);
    const c2 = layout.cell(0, 1);
    const dark = pixel(c1.x + 3, c1.y + 3);
    const light = pixel(c2.x + 3, c2.y + 3);
    const lum = (p: number[]) => p[0] + p[1] + p[2];
    assert.ok(lum(dark) + 300 < lum(light), `cell shades ${dark} vs ${light}`);
    // Source names come from the list: row 1 peaks at source 3 ("tiger shark").
    const svg = renderRelationshipSvg({
      matrix: m,
      targetClasses: Array.from({ length: C }, (_, i) => `c${i}`),
      sourceClasses: names,
    });
    assert.match(svg, />tiger shark</);
  });

  test('100 target classes are capped at maxRows with a note; pages via rowOffset', async () => {
    const C = 100;
    const S = 50;
    const m = peakedMatrix(C, S, 0.5);
    const targetClasses = Array.from({ length: C }, (_, i) => `bird ${i}`);
    const svg = renderRelationshipSvg({ matrix: m, targetClasses, maxRows: 40 });
    assert.match(svg, /target classes 1–40 of 100/);
    assert.match(svg, />#3</, 'missing source names fall back to #index');
    assert.doesNotMatch(svg, />bird 40</);
    const path = join(dir, 'rel100-page3.png');
    const layout = await renderRelationshipPng(path, {
      matrix: m,
      targetClasses,
      maxRows: 40,
      rowOffset: 80,
      topK: 3,
    });
    assert.equal(layout.rowsShown, 20);
    const { meta } = await decode(path);
    assert.equal(meta.width, layout.width);
    assert.equal(meta.height, layout.height);
    assert.match(
      renderRelationshipSvg({ matrix: m, targetClasses, rowOffset: 80 }),
      /target classes 81–100 of 100/,
    );
  });

  test('XML-special characters in labels are escaped and still render', async () => {
    const m = peakedMatrix(2, 4, 0.7);
    const targetClasses = ['<script>&"quotes"', "it's > that"];
    const sourceClasses = ['a&b', '<c>', 'd"e', "f'g"];
    const svg = renderRelationshipSvg({ matrix: m, targetClasses, sourceClasses });
    assert.ok(!svg.includes('<script>'), 'raw label leaked into the SVG');
    assert.match(svg, /&lt;script&gt;&amp;&quot;quotes&quot;/);
    const path = join(dir, 'rel-xml.png');
    const layout = await renderRelationshipPng(path, { matrix: m, targetClasses, sourceClasses });
    const { meta } = await decode(path);
    assert.equal(meta.width, layout.width);
  });

  test('rejects a matrix that does not match the class list', async () => {
    await assert.rejects(
      renderRelationshipPng(join(dir, 'bad.png'), { matrix: new Float32Array(7), targetClasses: ['a', 'b'] }),
      /multiple of 2/,
    );
  });
});

describe('renderCurvesPng', () => {
  test('small multiples: valid PNG of the layout size with each series drawn in its colour', async () => {
    const epochs = Array.from({ length: 10 }, (_, i) => i + 1);
    const path = join(dir, 'curves.png');
    const layout = await renderCurvesPng(path, [
      {
        title: 'loss <train> & "val"',
        xLabel: 'epoch',
        yLabel: 'loss',
        series: [
          { name: 'total', points: epochs.map((e) => ({ x: e, y: 2 / e })) },
          { name: 'source soft CE', points: epochs.map((e) => ({ x: e, y: 0.5 + 0.1 / e })) },
        ],
      },
      {
        title: 'val top-1',
        xLabel: 'epoch',
        yLabel: 'accuracy',
        series: [{ name: 'val', points: epochs.map((e) => ({ x: e, y: 1 - 1 / (e + 1) })) }],
      },
      {
        title: 'empty',
        xLabel: 'step',
        yLabel: 'y',
        series: [{ name: 'nan only', points: [{ x: 1, y: Number.NaN }] }],
      },
    ]);
    const { meta, info, data } = await decode(path);
    assert.equal(meta.width, layout.width);
    assert.equal(meta.height, layout.height);
    assert.equal(layout.plots.length, 3);
    // Count pixels of each series colour inside a panel's plot area: the lines must be there.
    const countColour = (hex: string, area: { x: number; y: number; w: number; h: number }): number => {
      const rgb = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
      let hits = 0;
      for (let y = area.y; y < area.y + area.h; y++) {
        for (let x = area.x; x < area.x + area.w; x++) {
          const o = (y * info.width + x) * info.channels;
          if (
            Math.abs(data[o] - rgb[0]) + Math.abs(data[o + 1] - rgb[1]) + Math.abs(data[o + 2] - rgb[2]) <
            30
          )
            hits++;
        }
      }
      return hits;
    };
    assert.ok(countColour(SERIES_COLOURS[0], layout.plots[0]) > 200, 'first series missing');
    assert.ok(countColour(SERIES_COLOURS[1], layout.plots[0]) > 200, 'second series missing');
    assert.ok(countColour(SERIES_COLOURS[0], layout.plots[1]) > 200, 'accuracy series missing');
    assert.ok(countColour(SERIES_COLOURS[1], layout.plots[1]) < 50, 'panel 2 has only one series');
    assert.match(renderCurvesSvg([{ title: 'x', xLabel: 'a', yLabel: 'b', series: [] }]), /no data/);
  });

  test('niceTicks covers the range with round steps; escapeXml covers the five entities', () => {
    const t = niceTicks(0.43, 0.9, 5);
    assert.ok(t[0] <= 0.43 && t[t.length - 1] >= 0.9, `ticks ${t}`);
    assert.deepEqual(t, [0.4, 0.5, 0.6, 0.7, 0.8, 0.9]);
    assert.deepEqual(niceTicks(3, 3).length > 1, true);
    assert.equal(escapeXml(`<a href="x">&'`), '&lt;a href=&quot;x&quot;&gt;&amp;&apos;');
  });
});
