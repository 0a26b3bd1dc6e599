/**
 * The WFI deadlines of a pool thread's VMs: a binary min-heap of (deadline, VM), so that a thread
 * with many VMs on timers finds the next due one without looking at the others. An entry whose
 * VM slept again, was woken by a ring or left is stale: its owner checks it when it is due (and
 * drops the entries of a VM that leaves, so nothing keeps that VM alive).
 *
 * @packageDocumentation
 */

/** One deadline: performance.now() milliseconds, and whose. */
export interface Timer<T> {
  readonly at: number;
  readonly owner: T;
}

/** Deadlines, earliest first. */
export class Timers<T> {
  private readonly heap: Timer<T>[] = [];

  /** How many entries, stale ones included. */
  get size(): number {
    return this.heap.length;
  }

  /** The earliest deadline, or Infinity. */
  get next(): number {
    return this.heap[0]?.at ?? Infinity;
  }

  push(at: number, owner: T): void {
    const h = this.heap;
    h.push({ at, owner });
    let k = h.length - 1;
    while (k > 0) {
      const up = (k - 1) >> 1;
      if (h[up]!.at <= h[k]!.at) break;
      [h[up], h[k]] = [h[k]!, h[up]!];
      k = up;
    }
  }

  /** Removes and returns the earliest entry, or undefined. */
  pop(): Timer<T> | undefined {
    const h = this.heap;
    const top = h[0];
    const last = h.pop();
    if (top === undefined || last === undefined || h.length === 0) return top;
    h[0] = last;
    for (let k = 0; ;) {
      const l = 2 * k + 1;
      const r = l + 1;
      let m = k;
      if (l < h.length && h[l]!.at < h[m]!.at) m = l;
      if (r < h.length && h[r]!.at < h[m]!.at) m = r;
      if (m === k) break;
      [h[m], h[k]] = [h[k]!, h[m]!];
      k = m;
    }
    return top;
  }

  /** Drops every entry of `owner` (O(n); for a VM that leaves). */
  drop(owner: T): void {
    const keep = this.heap.filter((t) => t.owner !== owner);
    if (keep.length === this.heap.length) return;
    this.heap.length = 0;
    for (const t of keep) this.push(t.at, t.owner);
  }
}
