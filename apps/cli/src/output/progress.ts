import type { MigrationInfo } from '@handoff/qapi';
import { formatBytes } from './units.js';

/** What the renderer shows: a job's id, status and MigrationInfo. */
export interface ProgressSnapshot {
  id: string;
  label: string;
  info: MigrationInfo;
  /** Extra text after the status, e.g. "3/5 VMs". */
  note?: string;
}

const BAR = 24;

/** Formats seconds as 1.2s, 45s, 3m05s. */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '-';
  if (seconds < 10) return `${seconds.toFixed(1)}s`;
  if (seconds < 60) return `${Math.round(seconds)}s`;
  const m = Math.floor(seconds / 60);
  return `${m}m${String(Math.round(seconds % 60)).padStart(2, '0')}s`;
}

/**
 * Shows a job's progress. On a terminal: one line redrawn in place (bar,
 * bytes transferred of total to send, rate, ETA, status). Elsewhere: a plain
 * line when the status changes and at most one per `plainEveryMs` otherwise.
 * Rate is measured from the transferred counter between snapshots.
 */
export class ProgressRenderer {
  private lastPlain = 0;
  private lastStatus = '';
  private lastSample: { at: number; bytes: number } | undefined;
  private rate = 0;
  private drawn = false;

  constructor(
    private readonly write: (text: string) => void,
    private readonly tty: boolean,
    private readonly now: () => number = Date.now,
    private readonly plainEveryMs = 1000,
  ) {}

  /** Renders one snapshot. */
  update(s: ProgressSnapshot): void {
    const at = this.now();
    const bytes = s.info.ram.transferred;
    if (
      this.lastSample !== undefined &&
      at > this.lastSample.at &&
      bytes >= this.lastSample.bytes
    ) {
      const instant = ((bytes - this.lastSample.bytes) * 1000) / (at - this.lastSample.at);
      this.rate = this.rate === 0 ? instant : 0.7 * this.rate + 0.3 * instant;
    }
    this.lastSample = { at, bytes };
    const line = this.line(s);
    if (this.tty) {
      this.write(`\r\x1b[2K${line}`);
      this.drawn = true;
      return;
    }
    const changed = s.info.status !== this.lastStatus;
    if (changed || at - this.lastPlain >= this.plainEveryMs) {
      this.write(`${line}\n`);
      this.lastPlain = at;
    }
    this.lastStatus = s.info.status;
  }

  /** Ends the progress line (terminal) so later output starts on a fresh line. */
  done(): void {
    if (this.tty && this.drawn) this.write('\n');
    this.drawn = false;
  }

  /** The text of one progress line. */
  line(s: ProgressSnapshot): string {
    const { ram, status } = s.info;
    const toSend = ram.transferred + ram.remaining;
    const fraction =
      status === 'completed' ? 1 : toSend > 0 ? Math.min(1, ram.transferred / toSend) : 0;
    const filled = Math.round(fraction * BAR);
    const bar = `[${'#'.repeat(filled)}${'.'.repeat(BAR - filled)}]`;
    const pct = `${Math.floor(fraction * 100)}%`.padStart(4);
    const rate = this.rate > 0 ? `${formatBytes(Math.round(this.rate))}/s` : '-';
    const eta =
      status === 'completed'
        ? '0s'
        : this.rate > 0 && ram.remaining > 0
          ? formatDuration(ram.remaining / this.rate)
          : '-';
    const throttled = s.info.cpuThrottlePercentage;
    const note =
      (throttled > 0 && status !== 'completed'
        ? ` pass ${s.info.iteration}, vCPU throttled ${throttled}%`
        : '') + (s.note !== undefined ? ` ${s.note}` : '');
    return (
      `${s.label} ${bar} ${pct} ${formatBytes(ram.transferred)}/${formatBytes(toSend)} ` +
      `${rate} ETA ${eta} ${status}${note}`
    );
  }
}
