/**
 * PNG figures without a browser: each plot is an SVG string rendered by sharp (librsvg, system
 * fonts). One image pixel per SVG unit, so the layout functions give exact pixel geometry.
 */
import sharp from 'sharp';
import type { Matrix } from './relationship.js';
import { relationshipStats } from './relationship.js';

const FONT = 'DejaVu Sans, sans-serif';
/** Approximate advance width of DejaVu Sans per font-size unit, used to truncate labels. */
const CHAR_WIDTH = 0.6;

/** Escape text for SVG content and attribute values. */
export function escapeXml(text: string): string {
  return text.replace(
    /[&<>"']/g,
    (ch) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&apos;' })[ch] ?? ch,
  );
}

function fit(text: string, widthPx: number, fontSize: number): string {
  const max = Math.max(1, Math.floor(widthPx / (fontSize * CHAR_WIDTH)));
  return text.length <= max ? text : `${text.slice(0, Math.max(1, max - 1))}…`;
}

/** ImageNet-style names list synonyms ("jay, Garrulus glandarius"): show the first. */
function shortName(name: string): string {
  const first = name.split(',')[0].trim();
  return first.length > 0 ? first : name.trim();
}

function svgText(x: number, y: number, text: string, size: number, attrs = ''): string {
  return `<text x="${x}" y="${y}" font-family="${FONT}" font-size="${size}" ${attrs}>${escapeXml(text)}</text>`;
}

async function writePng(path: string, svg: string): Promise<void> {
  await sharp(Buffer.from(svg), { density: 72 }).png().toFile(path);
}

/** White → dark blue; sqrt so that the small probabilities typical of 1000-way rows stay visible. */
export function probabilityColour(p: number): string {
  const t = Math.sqrt(Math.min(1, Math.max(0, Number.isFinite(p) ? p : 0)));
  const lo = [247, 251, 255];
  const hi = [8, 48, 107];
  const c = lo.map((v, i) => Math.round(v + (hi[i] - v) * t));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

export interface RelationshipPlotOptions {
  /** R [targetClasses.length × S], row-major. */
  matrix: Matrix;
  targetClasses: readonly string[];
  /** Source class names (index → name); "#index" where missing. */
  sourceClasses?: readonly string[];
  /** Source classes shown per target class. Default 5. */
  topK?: number;
  /** Target rows per image; a note says how many were left out. Default 40. */
  maxRows?: number;
  /** First target row to draw, for paging through many classes. Default 0. */
  rowOffset?: number;
  title?: string;
}

export interface RelationshipLayout {
  width: number;
  height: number;
  /** Target rows [firstRow, firstRow + rowsShown) are drawn. */
  firstRow: number;
  rowsShown: number;
  topK: number;
  /** Pixel rectangle of the k-th source cell of the r-th drawn row. */
  cell(r: number, k: number): { x: number; y: number; w: number; h: number };
}

const MARGIN = 16;
const TITLE_H = 36;
const HEADER_H = 24;
const LABEL_W = 210;
const CELL_W = 172;
const ROW_H = 36;
const FOOTER_H = 30;

/** Geometry of the relationship figure for a target count; renderRelationshipPng draws exactly this. */
export function relationshipLayout(
  numTargets: number,
  options: { topK?: number; maxRows?: number; rowOffset?: number } = {},
): RelationshipLayout {
  const topK = Math.max(1, Math.floor(options.topK ?? 5));
  const maxRows = Math.max(1, Math.floor(options.maxRows ?? 40));
  const firstRow = Math.min(Math.max(0, Math.floor(options.rowOffset ?? 0)), Math.max(0, numTargets - 1));
  const rowsShown = Math.max(0, Math.min(maxRows, numTargets - firstRow));
  const top = MARGIN + TITLE_H + HEADER_H;
  return {
    width: MARGIN * 2 + LABEL_W + topK * CELL_W,
    height: top + Math.max(1, rowsShown) * ROW_H + FOOTER_H + MARGIN,
    firstRow,
    rowsShown,
    topK,
    cell: (r, k) => ({ x: MARGIN + LABEL_W + k * CELL_W, y: top + r * ROW_H, w: CELL_W, h: ROW_H }),
  };
}

/**
 * SVG of the top-k source classes of each target class: one row per target class, cells
 * shaded by p(y_s | y_t) and labelled with the source name and the probability.
 *
 * Shape: matrix [C × S] with C = targetClasses.length.
 */
export function renderRelationshipSvg(options: RelationshipPlotOptions): string {
  const C = options.targetClasses.length;
  if (C === 0) throw new Error('renderRelationshipPng: targetClasses is empty');
  if (options.matrix.length % C !== 0) {
    throw new Error(
      `renderRelationshipPng: matrix has ${options.matrix.length} values, not a multiple of ${C} target classes`,
    );
  }
  const S = options.matrix.length / C;
  const layout = relationshipLayout(C, options);
  const stats = relationshipStats(options.matrix, C, S, Math.min(layout.topK, S));
  const parts: string[] = [];
  const { width, height } = layout;
  parts.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}">`,
  );
  parts.push(`<rect x="0" y="0" width="${width}" height="${height}" fill="white"/>`);
  const title =
    options.title ?? `Category relationship p(source | target): top ${layout.topK} source classes`;
  parts.push(
    svgText(MARGIN, MARGIN + 20, fit(title, width - 2 * MARGIN, 16), 16, 'font-weight="bold" fill="#222"'),
  );
  const headerY = MARGIN + TITLE_H + 16;
  parts.push(svgText(MARGIN, headerY, 'target class', 12, 'fill="#555"'));
  for (let k = 0; k < layout.topK; k++) {
    parts.push(svgText(layout.cell(0, k).x + 6, headerY, `source #${k + 1}`, 12, 'fill="#555"'));
  }
  for (let r = 0; r < layout.rowsShown; r++) {
    const t = layout.firstRow + r;
    const y = layout.cell(r, 0).y;
    if (r % 2 === 1)
      parts.push(`<rect x="${MARGIN}" y="${y}" width="${LABEL_W}" height="${ROW_H}" fill="#f2f2f2"/>`);
    parts.push(
      svgText(
        MARGIN + 6,
        y + ROW_H / 2 + 5,
        fit(options.targetClasses[t], LABEL_W - 12, 13),
        13,
        'fill="#111"',
      ),
    );
    for (let k = 0; k < layout.topK; k++) {
      const box = layout.cell(r, k);
      const idx = stats.top[t].indices[k];
      if (idx === undefined) continue;
      const p = stats.top[t].probs[k];
      const dark = Math.sqrt(Math.max(0, p)) > 0.55;
      const ink = dark ? 'white' : '#111';
      const name = options.sourceClasses?.[idx];
      const label = name === undefined ? `#${idx}` : shortName(name);
      parts.push(
        `<rect x="${box.x}" y="${box.y}" width="${box.w - 2}" height="${box.h - 2}" fill="${probabilityColour(p)}"/>`,
      );
      parts.push(svgText(box.x + 6, box.y + 15, fit(label, box.w - 12, 12), 12, `fill="${ink}"`));
      parts.push(svgText(box.x + 6, box.y + 29, p.toFixed(3), 11, `fill="${ink}"`));
    }
  }
  const noteY = layout.cell(Math.max(1, layout.rowsShown), 0).y + 20;
  const shown =
    layout.rowsShown === C
      ? `all ${C} target classes`
      : `target classes ${layout.firstRow + 1}–${layout.firstRow + layout.rowsShown} of ${C}`;
  parts.push(
    svgText(MARGIN, noteY, `Showing ${shown}; ${S} source classes; cell shade ∝ √p.`, 12, 'fill="#555"'),
  );
  parts.push('</svg>');
  return parts.join('\n');
}

/**
 * Write the relationship figure (see renderRelationshipSvg) as a PNG.
 *
 * Shape: matrix [C × S] with C = targetClasses.length.
 */
export async function renderRelationshipPng(
  path: string,
  options: RelationshipPlotOptions,
): Promise<RelationshipLayout> {
  const svg = renderRelationshipSvg(options);
  await writePng(path, svg);
  return relationshipLayout(options.targetClasses.length, options);
}

export interface CurveSeries {
  name: string;
  points: { x: number; y: number }[];
}

export interface CurvePanel {
  title?: string;
  series: CurveSeries[];
  xLabel: string;
  yLabel: string;
}

export interface CurvesLayout {
  width: number;
  height: number;
  columns: number;
  /** Plot area (inside the axes) of each panel, in image pixels. */
  plots: { x: number; y: number; w: number; h: number }[];
}

const PANEL_W = 480;
const PANEL_H = 320;
const PAD = { left: 66, right: 16, top: 36, bottom: 50 };
/** Tableau 10: distinct and colour-blind friendly. */
export const SERIES_COLOURS = [
  '#4e79a7',
  '#f28e2b',
  '#e15759',
  '#76b7b2',
  '#59a14f',
  '#edc948',
  '#b07aa1',
  '#ff9da7',
  '#9c755f',
  '#bab0ac',
];

/** Geometry of the small-multiples figure; renderCurvesPng draws exactly this. */
export function curvesLayout(
  panelCount: number,
  columns = Math.min(2, Math.max(1, panelCount)),
): CurvesLayout {
  const cols = Math.max(1, Math.floor(columns));
  const rows = Math.max(1, Math.ceil(panelCount / cols));
  const plots = Array.from({ length: panelCount }, (_, i) => {
    const px = MARGIN + (i % cols) * PANEL_W;
    const py = MARGIN + Math.floor(i / cols) * PANEL_H;
    return {
      x: px + PAD.left,
      y: py + PAD.top,
      w: PANEL_W - PAD.left - PAD.right,
      h: PANEL_H - PAD.top - PAD.bottom,
    };
  });
  return { width: 2 * MARGIN + cols * PANEL_W, height: 2 * MARGIN + rows * PANEL_H, columns: cols, plots };
}

/** About `count` round tick values (1, 2, 2.5, 5 × 10^k steps) covering [lo, hi]. */
export function niceTicks(lo: number, hi: number, count = 5): number[] {
  if (!(hi > lo)) {
    const pad = lo === 0 ? 1 : Math.abs(lo) * 0.1;
    return niceTicks(lo - pad, lo + pad, count);
  }
  const raw = (hi - lo) / Math.max(1, count);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const ticks: number[] = [];
  for (let v = Math.floor(lo / step) * step; v <= hi + step * 1e-9; v += step)
    ticks.push(Number(v.toPrecision(12)));
  if (ticks[ticks.length - 1] < hi) ticks.push(Number((ticks[ticks.length - 1] + step).toPrecision(12)));
  return ticks;
}

function formatTick(v: number): string {
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a >= 1e5 || a < 1e-3) return v.toExponential(1);
  return String(Number(v.toPrecision(4)));
}

function renderPanel(panel: CurvePanel, plot: { x: number; y: number; w: number; h: number }): string {
  const parts: string[] = [];
  const points = panel.series
    .flatMap((s) => s.points)
    .filter((p) => Number.isFinite(p.x) && Number.isFinite(p.y));
  const px0 = plot.x - PAD.left;
  const py0 = plot.y - PAD.top;
  if (panel.title)
    parts.push(
      svgText(
        px0 + PAD.left,
        py0 + 22,
        fit(panel.title, PANEL_W - PAD.left, 14),
        14,
        'font-weight="bold" fill="#222"',
      ),
    );
  parts.push(
    `<rect x="${plot.x}" y="${plot.y}" width="${plot.w}" height="${plot.h}" fill="none" stroke="#888" stroke-width="1"/>`,
  );
  parts.push(
    svgText(
      plot.x + plot.w / 2,
      plot.y + plot.h + 42,
      fit(panel.xLabel, plot.w, 12),
      12,
      'text-anchor="middle" fill="#333"',
    ),
  );
  const ly = plot.y + plot.h / 2;
  parts.push(
    svgText(
      px0 + 14,
      ly,
      fit(panel.yLabel, plot.h, 12),
      12,
      `text-anchor="middle" fill="#333" transform="rotate(-90 ${px0 + 14} ${ly})"`,
    ),
  );
  if (points.length === 0) {
    parts.push(svgText(plot.x + plot.w / 2, ly, 'no data', 13, 'text-anchor="middle" fill="#999"'));
    return parts.join('\n');
  }
  const xTicks = niceTicks(Math.min(...points.map((p) => p.x)), Math.max(...points.map((p) => p.x)), 6);
  const yTicks = niceTicks(Math.min(...points.map((p) => p.y)), Math.max(...points.map((p) => p.y)), 5);
  const [x0, x1] = [xTicks[0], xTicks[xTicks.length - 1]];
  const [y0, y1] = [yTicks[0], yTicks[yTicks.length - 1]];
  const sx = (x: number) => plot.x + ((x - x0) / (x1 - x0)) * plot.w;
  const sy = (y: number) => plot.y + plot.h - ((y - y0) / (y1 - y0)) * plot.h;
  for (const t of xTicks) {
    const x = sx(t).toFixed(1);
    parts.push(`<line x1="${x}" y1="${plot.y}" x2="${x}" y2="${plot.y + plot.h}" stroke="#e6e6e6"/>`);
    parts.push(
      `<line x1="${x}" y1="${plot.y + plot.h}" x2="${x}" y2="${plot.y + plot.h + 5}" stroke="#666"/>`,
    );
    parts.push(
      svgText(Number(x), plot.y + plot.h + 19, formatTick(t), 11, 'text-anchor="middle" fill="#444"'),
    );
  }
  for (const t of yTicks) {
    const y = sy(t).toFixed(1);
    parts.push(`<line x1="${plot.x}" y1="${y}" x2="${plot.x + plot.w}" y2="${y}" stroke="#e6e6e6"/>`);
    parts.push(`<line x1="${plot.x - 5}" y1="${y}" x2="${plot.x}" y2="${y}" stroke="#666"/>`);
    parts.push(svgText(plot.x - 8, Number(y) + 4, formatTick(t), 11, 'text-anchor="end" fill="#444"'));
  }
  panel.series.forEach((s, i) => {
    const colour = SERIES_COLOURS[i % SERIES_COLOURS.length];
    const pts = s.points
      .filter((p) => Number.isFinite(p.x) && Number.isFinite(p.y))
      .sort((a, b) => a.x - b.x);
    if (pts.length > 1) {
      const d = pts.map((p) => `${sx(p.x).toFixed(1)},${sy(p.y).toFixed(1)}`).join(' ');
      parts.push(`<polyline points="${d}" fill="none" stroke="${colour}" stroke-width="2"/>`);
    }
    // Markers keep single points and sparse curves visible.
    if (pts.length <= 60)
      for (const p of pts)
        parts.push(`<circle cx="${sx(p.x).toFixed(1)}" cy="${sy(p.y).toFixed(1)}" r="3" fill="${colour}"/>`);
  });
  // Legend inside the plot, in whichever corner covers the fewest data points.
  const named = panel.series.map((s, i) => ({
    name: s.name,
    colour: SERIES_COLOURS[i % SERIES_COLOURS.length],
  }));
  if (named.length > 0) {
    const lw = Math.min(plot.w - 10, 42 + Math.max(...named.map((s) => s.name.length)) * 11 * CHAR_WIDTH);
    const lh = 8 + named.length * 17;
    const corners = [
      { x: plot.x + plot.w - lw - 6, y: plot.y + 6 },
      { x: plot.x + plot.w - lw - 6, y: plot.y + plot.h - lh - 6 },
      { x: plot.x + 6, y: plot.y + 6 },
      { x: plot.x + 6, y: plot.y + plot.h - lh - 6 },
    ];
    const covered = corners.map(
      (c) =>
        points.filter(
          (p) =>
            sx(p.x) >= c.x - 4 && sx(p.x) <= c.x + lw + 4 && sy(p.y) >= c.y - 4 && sy(p.y) <= c.y + lh + 4,
        ).length,
    );
    const { x: lx, y: ly0 } = corners[covered.indexOf(Math.min(...covered))];
    parts.push(
      `<rect x="${lx}" y="${ly0}" width="${lw}" height="${lh}" fill="white" fill-opacity="0.85" stroke="#ccc"/>`,
    );
    named.forEach((s, i) => {
      const yy = ly0 + 13 + i * 17;
      parts.push(
        `<line x1="${lx + 6}" y1="${yy - 4}" x2="${lx + 24}" y2="${yy - 4}" stroke="${s.colour}" stroke-width="3"/>`,
      );
      parts.push(svgText(lx + 29, yy, fit(s.name, lw - 32, 11), 11, 'fill="#222"'));
    });
  }
  return parts.join('\n');
}

/** SVG of small multiples, one panel per entry (two columns). */
export function renderCurvesSvg(panels: readonly CurvePanel[]): string {
  if (panels.length === 0) throw new Error('renderCurvesPng: no panels to draw');
  const layout = curvesLayout(panels.length);
  const { width, height } = layout;
  const body = panels.map((panel, i) => renderPanel(panel, layout.plots[i]));
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}">`,
    `<rect x="0" y="0" width="${width}" height="${height}" fill="white"/>`,
    ...body,
    '</svg>',
  ].join('\n');
}

/** Write training curves (e.g. loss and accuracy by epoch) as small multiples to a PNG. */
export async function renderCurvesPng(path: string, panels: readonly CurvePanel[]): Promise<CurvesLayout> {
  await writePng(path, renderCurvesSvg(panels));
  return curvesLayout(panels.length);
}
