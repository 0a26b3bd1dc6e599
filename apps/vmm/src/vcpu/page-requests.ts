/**
 * The host's side of a VM's lazy RAM (post-copy): the vCPU thread parks the VM on a missing
 * page and posts `page-wait`; this asks memstore for the page (FetchPages, answered once the
 * page is present), then rings the VM's doorbell — the thread sees the page and runs the VM on.
 * It also keeps the VM's post-copy waiting counters for the migration layer.
 *
 * - **One request per page in flight**: a page already asked for (by this VM's earlier fault,
 *   or as the neighbour of one) is not asked again; its wait joins the request in flight.
 * - **A neighbourhood**: one request covers the page and the missing pages after it, up to
 *   {@link PageRequestsOptions.neighbourhood} pages in all (guests tend to run and scan on).
 * - **Never gives up while the fill may go on**: a request that fails without an answer
 *   (memstore restarting, a deadline while the source is paused) is asked again after a backoff;
 *   whatever the outcome, the doorbell is rung, and the thread decides from the present map (a
 *   Failed fill crashes the VM, there).
 *
 * @packageDocumentation
 */
import { PresentState, type PresentMap } from '@handoff/bitmap';
import type { Logger } from '@handoff/service';
import type { VcpuMessage } from './protocol.js';

/** Asks memstore for pages `[first, first + count)`; resolves once they are present. */
export type FetchPages = (first: number, count: number) => Promise<void>;

/** Options of {@link PageRequests}. */
export interface PageRequestsOptions {
  /** The present map of the VM's lazy main RAM (the host's view). */
  readonly map: PresentMap;
  /** FetchPages on memstore's lease channel for this region. */
  readonly fetch: FetchPages;
  /** Rings the VM's doorbell (the existing host → thread wake path). */
  readonly wake: () => void;
  readonly logger?: Logger;
  /** Pages asked for per fault: the page and the ones after it (default 16). */
  readonly neighbourhood?: number;
  /** First wait before a failed request is asked again, doubling to 2 s (default 50 ms). */
  readonly retryMs?: number;
}

/** What a VM's post-copy waits look like now (the migration layer reports them). */
export interface PostcopyWaits {
  /** Pages the guest waited for since the VM started here. */
  readonly pagesWaited: number;
  /** Waits in progress (0 or 1: one vCPU). */
  readonly waiting: number;
  /** A wait is in progress while the map says SourcePaused: report `postcopy-paused`. */
  readonly sourcePaused: boolean;
  /** The page waited for now, or -1. */
  readonly page: number;
  /** Fault latency as the guest saw it (park to run again), over the last samples; 0: none. */
  readonly p50Us: number;
  readonly p99Us: number;
  /** Samples behind p50/p99 (at most {@link LATENCY_SAMPLES}). */
  readonly samples: number;
  /** Page requests sent to memstore (each covers up to the neighbourhood). */
  readonly requests: number;
}

/** Latency samples kept (a ring: the most recent ones). */
export const LATENCY_SAMPLES = 1024;

const MAX_RETRY_MS = 2000;

/** The host's page requests and wait counters of one VM with lazy RAM (module doc). */
export class PageRequests {
  private readonly inflight = new Map<number, Promise<void>>();
  private readonly latency = new Float64Array(LATENCY_SAMPLES);
  private latencyCount = 0;
  private pagesWaited = 0;
  private waitingPage = -1;
  private requests = 0;
  private closed = false;
  private readonly neighbourhood: number;
  private readonly retryMs: number;

  constructor(private readonly opts: PageRequestsOptions) {
    this.neighbourhood = Math.max(1, opts.neighbourhood ?? 16);
    this.retryMs = opts.retryMs ?? 50;
  }

  /** Handles a VM message if it is about pages (`page-wait`, `page-arrived`); true if it was. */
  onMessage(m: VcpuMessage): boolean {
    if (m.t === 'page-wait') {
      this.pagesWaited++;
      this.waitingPage = m.page;
      this.want(m.page);
      return true;
    }
    if (m.t === 'page-arrived') {
      this.waitingPage = -1;
      this.latency[this.latencyCount++ % LATENCY_SAMPLES] = m.waitedUs;
      return true;
    }
    return false;
  }

  /** The VM's waits now. */
  waits(): PostcopyWaits {
    const n = Math.min(this.latencyCount, LATENCY_SAMPLES);
    const sorted = this.latency.slice(0, n).sort();
    const at = (q: number): number => (n === 0 ? 0 : sorted[Math.min(n - 1, Math.floor(q * n))]!);
    const waiting = this.waitingPage >= 0 ? 1 : 0;
    return {
      pagesWaited: this.pagesWaited,
      waiting,
      sourcePaused: waiting > 0 && this.opts.map.state === PresentState.SourcePaused,
      page: this.waitingPage,
      p50Us: at(0.5),
      p99Us: at(0.99),
      samples: n,
      requests: this.requests,
    };
  }

  /** Stops asking (the VM is gone); requests in flight are left to end. */
  close(): void {
    this.closed = true;
  }

  /** Gets `page` asked for (or joins the request in flight for it), then rings the doorbell. */
  private want(page: number): void {
    const { map } = this.opts;
    if (map.isPresent(page)) {
      this.opts.wake(); // arrived between the fault and here
      return;
    }
    const joined = this.inflight.get(page);
    if (joined !== undefined) {
      void joined.then(this.opts.wake);
      return;
    }
    let count = 1;
    while (
      count < this.neighbourhood &&
      page + count < map.pages &&
      !this.inflight.has(page + count) &&
      !map.isPresent(page + count)
    ) {
      count++;
    }
    const done = this.fetch(page, count);
    for (let p = page; p < page + count; p++) this.inflight.set(p, done);
    void done.then(() => {
      for (let p = page; p < page + count; p++) {
        if (this.inflight.get(p) === done) this.inflight.delete(p);
      }
      this.opts.wake();
    });
  }

  /** FetchPages until it answers, the pages are here, the fill failed, or this is closed. */
  private async fetch(first: number, count: number): Promise<void> {
    const { map } = this.opts;
    let delay = this.retryMs;
    for (let attempt = 0; ; attempt++) {
      this.requests++;
      try {
        await this.opts.fetch(first, count);
        return;
      } catch (err) {
        if (this.closed || map.isPresent(first) || map.state === PresentState.Failed) return;
        // Once per request at warn: a paused source makes every attempt time out until it is
        // recovered, which the migration reports (postcopy-paused).
        const level = attempt === 0 && map.state !== PresentState.SourcePaused ? 'warn' : 'debug';
        this.opts.logger?.[level](
          { page: first, count, error: (err as Error).message, retryInMs: delay },
          'post-copy page request failed; asking again (the guest waits for the page)',
        );
      }
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, MAX_RETRY_MS);
      if (this.closed || map.isPresent(first)) return;
    }
  }
}
