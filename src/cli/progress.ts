import type { Progress } from '../cotuning/types.js';

function formatSeconds(s: number | undefined): string {
  if (s === undefined || !Number.isFinite(s)) return '--:--';
  const m = Math.floor(s / 60);
  return `${m}:${String(Math.floor(s % 60)).padStart(2, '0')}`;
}

function describe(p: Progress): string {
  const parts = [p.method ? `${p.method} ${p.phase}` : p.phase];
  if (p.step !== undefined) parts.push(`step ${p.step}/${p.steps} (epoch ${p.epoch}/${p.epochs})`);
  if (p.loss !== undefined) parts.push(`loss ${p.loss.toFixed(3)}${p.lossSource ? ` (ce ${p.lossTarget?.toFixed(3)}, src ${p.lossSource.toFixed(3)})` : ''}`);
  if (p.valTop1 !== undefined) parts.push(`val ${(p.valTop1 * 100).toFixed(1)}%`);
  if (p.imagesPerSec) parts.push(`${p.imagesPerSec.toFixed(1)} img/s`);
  if (p.etaSeconds !== undefined) parts.push(`eta ${formatSeconds(p.etaSeconds)}`);
  if (p.message) parts.push(p.message);
  return parts.join('  ');
}

/**
 * A redrawn progress bar on a terminal, plain lines elsewhere (logs, CI): a line per phase change,
 * per validation and at most one every `intervalMs` in between.
 */
export function createProgressPrinter(stream: NodeJS.WriteStream, intervalMs = 10_000): { update(p: Progress): void; done(): void } {
  const tty = stream.isTTY === true;
  let last = 0;
  let lastKey = '';
  return {
    update(p) {
      const now = Date.now();
      if (tty) {
        const width = 24;
        const filled = Math.round(p.fraction * width);
        const bar = `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${(p.fraction * 100).toFixed(0).padStart(3)}%`;
        const line = `${bar} ${describe(p)}`.slice(0, Math.max(20, (stream.columns ?? 120) - 1));
        stream.write(`\r\x1b[2K${line}`);
        return;
      }
      const key = `${p.method}/${p.phase}`;
      if (key !== lastKey || p.valTop1 !== undefined || now - last >= intervalMs) {
        stream.write(`${(p.fraction * 100).toFixed(1).padStart(5)}%  ${describe(p)}\n`);
        last = now;
        lastKey = key;
      }
    },
    done() {
      if (tty) stream.write('\n');
    },
  };
}
