import { formatDuration } from './progress.js';
import { formatBytes } from './units.js';

const BAR = 24;

/**
 * Shows the bytes of a file transfer (a snapshot export or import) on a terminal: one line
 * redrawn in place with a bar, bytes done of the total, rate and ETA, at most every
 * `everyMs`. Off a terminal it prints nothing (the command prints its result at the end).
 */
export class TransferProgress {
  private started: number | undefined;
  private lastDraw = -Infinity;
  private drawn = false;

  constructor(
    private readonly label: string,
    private readonly write: (text: string) => void,
    private readonly tty: boolean,
    private readonly now: () => number = Date.now,
    private readonly everyMs = 100,
  ) {}

  /** Records `done` bytes of `total`; redraws when due (always at the end). */
  update(done: number, total: number): void {
    if (!this.tty) return;
    const at = this.now();
    this.started ??= at;
    if (done < total && at - this.lastDraw < this.everyMs) return;
    this.lastDraw = at;
    this.write(`\r\x1b[2K${this.line(done, total, at)}`);
    this.drawn = true;
  }

  /** Ends the line so later output starts on a fresh one. */
  done(): void {
    if (this.drawn) this.write('\n');
    this.drawn = false;
  }

  /** The text of one progress line. */
  line(done: number, total: number, at: number = this.now()): string {
    const fraction = total > 0 ? Math.min(1, done / total) : 0;
    const filled = Math.round(fraction * BAR);
    const bar = `[${'#'.repeat(filled)}${'.'.repeat(BAR - filled)}]`;
    const seconds = (at - (this.started ?? at)) / 1000;
    const rate = seconds > 0 ? done / seconds : 0;
    const eta = rate > 0 && total > done ? formatDuration((total - done) / rate) : '-';
    return (
      `${this.label} ${bar} ${`${Math.floor(fraction * 100)}%`.padStart(4)} ` +
      `${formatBytes(done)}/${formatBytes(total)} ${rate > 0 ? `${formatBytes(Math.round(rate))}/s` : '-'} ` +
      `ETA ${eta}`
    );
  }
}
