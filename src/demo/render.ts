import type { EventValue, JobValue } from '../contracts/jobs.js';

const pct = (x: number) => `${(x * 100).toFixed(1)}%`;

interface ProgressData {
  phase?: string;
  fraction?: number;
  method?: string;
  step?: number;
  steps?: number;
  epoch?: number;
  epochs?: number;
  message?: string;
  metrics?: { loss?: number; valTop1?: number; imagesPerSec?: number; etaSeconds?: number };
}

/** One human line for a progress event, without the bar. */
export function describeProgress(data: ProgressData): string {
  const parts = [data.phase ?? 'working'];
  if (data.method) parts.push(data.method);
  if (data.step !== undefined && data.steps !== undefined) parts.push(`step ${data.step}/${data.steps}`);
  else if (data.epoch !== undefined && data.epochs !== undefined)
    parts.push(`epoch ${data.epoch}/${data.epochs}`);
  const m = data.metrics ?? {};
  if (m.loss !== undefined) parts.push(`loss ${m.loss.toFixed(3)}`);
  if (m.valTop1 !== undefined) parts.push(`val top-1 ${pct(m.valTop1)}`);
  if (m.imagesPerSec !== undefined) parts.push(`${m.imagesPerSec.toFixed(0)} img/s`);
  if (m.etaSeconds !== undefined) parts.push(`eta ${Math.round(m.etaSeconds)} s`);
  if (data.message) parts.push(`— ${data.message}`);
  return parts.join(' · ');
}

/**
 * Shows job events: a redrawn progress bar on a terminal; on anything else (CI logs, pipes)
 * plain lines, one per phase or method change and per 10% of progress.
 */
export class ProgressView {
  private lastBucket = -1;
  private lastHeading = '';
  private barShown = false;

  constructor(
    private readonly out: NodeJS.WriteStream,
    private readonly started = Date.now(),
  ) {}

  private get tty(): boolean {
    return this.out.isTTY === true;
  }

  private elapsed(): string {
    return `${((Date.now() - this.started) / 1000).toFixed(0)}s`.padStart(5);
  }

  /** Print a line above the bar. */
  line(text: string): void {
    if (this.tty && this.barShown) this.out.write('\r\x1b[2K');
    this.out.write(`${text}\n`);
    this.barShown = false;
  }

  event(event: EventValue): void {
    const data = event.data as ProgressData & { status?: string; error?: string; attempt?: number };
    if (event.type === 'progress') return this.progress(data);
    if (event.type === 'status') {
      const extra = data.error
        ? `: ${data.error}`
        : data.attempt && data.attempt > 1
          ? ` (attempt ${data.attempt})`
          : '';
      return this.line(`[${this.elapsed()}] job ${data.status}${extra}`);
    }
    if (event.type === 'log' && data.message) return this.line(`[${this.elapsed()}] ${data.message}`);
    if (event.type === 'checkpoint') return; // too chatty for the demo
  }

  private progress(data: ProgressData): void {
    const fraction = Math.max(0, Math.min(1, data.fraction ?? 0));
    const text = describeProgress(data);
    if (this.tty) {
      const width = 24;
      const filled = Math.round(fraction * width);
      const bar = `[${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${pct(fraction).padStart(6)}`;
      const columns = this.out.columns ?? 100;
      this.out.write(`\r\x1b[2K${`${bar} ${text}`.slice(0, columns - 1)}`);
      this.barShown = true;
      return;
    }
    const heading = `${data.phase}/${data.method ?? ''}`;
    const bucket = Math.floor(fraction * 10);
    if (heading === this.lastHeading && bucket === this.lastBucket) return;
    this.lastHeading = heading;
    this.lastBucket = bucket;
    this.out.write(`[${this.elapsed()}] ${pct(fraction).padStart(6)} ${text}\n`);
  }

  /** Leave the bar on its own line before other output. */
  finish(): void {
    if (this.tty && this.barShown) this.out.write('\n');
    this.barShown = false;
  }
}

/** The accuracy table of a finished job, one row per method, plus the Co-Tuning gain. */
export function accuracyTable(job: JobValue): string {
  const result = job.result;
  if (!result) return 'no result';
  const header = ['method', 'top-1', 'top-5', 'best val top-1', 'best step', 'time'];
  const order = ['fine-tune', 'co-tuning'];
  const rows = [...result.results]
    .sort((a, b) => order.indexOf(a.method) - order.indexOf(b.method))
    .map((r) => [
      r.method,
      pct(r.top1),
      pct(r.top5),
      pct(r.bestValTop1),
      String(r.bestStep),
      `${r.seconds.toFixed(0)} s`,
    ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const fmt = (cells: string[]) =>
    cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  const lines = [fmt(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(fmt)];
  if (result.gain !== undefined) {
    const points = result.gain * 100;
    lines.push(
      '',
      `Co-Tuning gain over fine-tuning (top-1): ${points >= 0 ? '+' : ''}${points.toFixed(1)} points`,
    );
  }
  lines.push(`backend: ${result.backend}, job time ${result.seconds.toFixed(0)} s`);
  return lines.join('\n');
}
