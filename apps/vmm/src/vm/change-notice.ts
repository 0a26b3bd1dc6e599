/**
 * Coalesces bursts of changes into notices: the first change of a quiet spell is told
 * `delayMs` later (never inside the turn that made it), and while changes keep coming (a live
 * update moving hundreds of VMs), notices follow at most every `intervalMs`. Every change is
 * covered by a notice that fires after it.
 *
 * Why: each notice makes the vmm report its whole VM set to the migrator (O(VMs)); one per
 * change of a burst of N changes would cost O(N²).
 */
export class ChangeNotice {
  private timer: NodeJS.Timeout | undefined;
  private lastAt = Number.NEGATIVE_INFINITY;

  constructor(
    private readonly fire: () => void,
    private readonly delayMs: number,
    private readonly intervalMs: number,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** A change happened: a notice fires after it (one already pending covers it). */
  changed(): void {
    if (this.timer !== undefined) return;
    const wait = Math.max(this.delayMs, this.lastAt + this.intervalMs - this.now());
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.lastAt = this.now();
      this.fire();
    }, wait);
    this.timer.unref();
  }

  /** Drops a pending notice (the listeners are going away). */
  cancel(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }
}
