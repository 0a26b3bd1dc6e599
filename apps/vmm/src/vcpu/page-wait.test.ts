import { PresentMap, PresentState, presentMapBytes } from '@handoff/bitmap';
import { describe, expect, it } from 'vitest';
import { asm, elfOf, li } from '../cpu/test-asm.js';
import { ControlDevice } from '../devices/control.js';
import { PageRequests } from './page-requests.js';
import {
  CONTROL_BYTES,
  Ctl,
  Request,
  THREAD_CONTROL_BYTES,
  ThreadCtl,
  type ThreadCommand,
  type ThreadMessage,
  type VcpuMessage,
} from './protocol.js';
import { Scheduler } from './scheduler.js';

const RAM_BASE = 0x8000_0000;
const RAM_SIZE = 1 << 20;
const PAGES = RAM_SIZE >>> 12;
/** The lazy VM's data page (missing until the test delivers it). */
const DATA_PAGE = 8;
const [t0, t1, s0] = [5, 6, 8];

/** Busy forever. */
const SPIN = elfOf([asm.addi(t0, t0, 1), asm.jal(0, -4)]);
/** Loads a word of DATA_PAGE, stores it + 1 next to it, then spins. */
const READER = elfOf([
  ...li(s0, RAM_BASE + DATA_PAGE * 4096),
  asm.lw(t1, s0, 0),
  asm.addi(t1, t1, 1),
  asm.sw(t1, s0, 4),
  asm.addi(t0, t0, 1),
  asm.jal(0, -4),
]);

interface Vm {
  readonly id: number;
  readonly ctl: Int32Array;
  readonly ram: SharedArrayBuffer;
  readonly map: PresentMap | undefined;
  instret(): number;
  messages(): VcpuMessage[];
  ring(request?: number): void;
}

/** A scheduler driven turn by turn in this thread (it never sleeps). */
class Thread {
  readonly control = new SharedArrayBuffer(THREAD_CONTROL_BYTES);
  readonly ctl = new Int32Array(this.control);
  readonly inbox: ThreadCommand[] = [];
  readonly posted: ThreadMessage[] = [];
  readonly scheduler = new Scheduler({
    control: this.control,
    hush: new SharedArrayBuffer(4),
    post: (msg) => this.posted.push(msg),
    receive: () => this.inbox.shift(),
    sleep: () => undefined,
    warmUp: false,
  });
  private nextId = 0;

  wake(): void {
    Atomics.add(this.ctl, ThreadCtl.WAKE, 1);
  }

  /** Places a VM; `lazy`: its RAM is lazy with only page 0 (the code) present. */
  add(name: string, elf: Uint8Array, lazy: boolean): Vm {
    const id = ++this.nextId;
    const control = new SharedArrayBuffer(CONTROL_BYTES);
    const words = PAGES >>> 5;
    const ram = new SharedArrayBuffer(RAM_SIZE);
    let map: PresentMap | undefined;
    let present: SharedArrayBuffer | undefined;
    if (lazy) {
      present = new SharedArrayBuffer(presentMapBytes(PAGES));
      map = PresentMap.initialize(present, PAGES);
      map.setState(PresentState.Filling);
      map.markPresent(0, 1);
    }
    this.inbox.push({
      t: 'add',
      id,
      init: {
        name,
        control,
        ram,
        ramSize: RAM_SIZE,
        bitmaps: new SharedArrayBuffer(3 * words * 4),
        dirty: [0, words * 4],
        touched: 2 * words * 4,
        bitmapWords: words,
        ramNotZero: false,
        ...(present !== undefined ? { present } : {}),
        elf,
        incoming: false,
        identity: ControlDevice.randomIdentity(),
        hostArgs: new Uint8Array(0),
      },
    });
    this.wake();
    const ctl = new Int32Array(control);
    const ctl64 = new BigInt64Array(control);
    return {
      id,
      ctl,
      ram,
      map,
      instret: () => Number(Atomics.load(ctl64, Ctl.INSTRET64)),
      messages: () => this.posted.filter((p) => p.id === id).map((p) => p.m),
      ring: (request) => {
        if (request !== undefined) Atomics.store(ctl, Ctl.REQUEST, request);
        Atomics.add(ctl, Ctl.DOORBELL, 1);
        this.wake();
      },
    };
  }

  turns(n: number): void {
    for (let k = 0; k < n; k++) this.scheduler.turn();
  }
}

/** Delivers page `page` of `vm` as memstore does: bytes into the file, then the bit. */
function deliver(vm: Vm, page: number, value: number): void {
  new DataView(vm.ram).setUint32(page * 4096, value, true);
  vm.map!.markPresent(page, 1);
}

describe('a VM waiting for a page of lazy RAM', () => {
  it('parks alone: its thread-mate runs on; the page arrives, the host rings, it resumes', () => {
    const t = new Thread();
    const a = t.add('lazy', READER, true);
    const b = t.add('busy', SPIN, false);
    t.turns(1);
    a.ring(Request.RUN);
    b.ring(Request.RUN);
    t.turns(5);
    const wait = a.messages().find((m) => m.t === 'page-wait');
    expect(wait).toEqual({ t: 'page-wait', block: 'ram0', page: DATA_PAGE, sourcePaused: false });
    expect(Atomics.load(a.ctl, Ctl.PAGE_WAITING)).toBe(DATA_PAGE + 1);
    expect(Atomics.load(a.ctl, Ctl.PAGE_WAITS)).toBe(1);
    expect(Atomics.load(t.ctl, ThreadCtl.RUNNABLE)).toBe(1); // only the thread-mate
    const [a0, b0] = [a.instret(), b.instret()];
    t.turns(20);
    expect(a.instret()).toBe(a0);
    expect(b.instret()).toBeGreaterThan(b0);
    // A ring for something else does not end the wait.
    a.ring();
    t.turns(3);
    expect(a.instret()).toBe(a0);

    deliver(a, DATA_PAGE, 41);
    a.ring();
    t.turns(5);
    const arrived = a.messages().find((m) => m.t === 'page-arrived');
    expect(arrived).toMatchObject({ t: 'page-arrived', page: DATA_PAGE });
    expect((arrived as { waitedUs: number }).waitedUs).toBeGreaterThanOrEqual(0);
    expect(Atomics.load(a.ctl, Ctl.PAGE_WAITING)).toBe(0);
    expect(a.instret()).toBeGreaterThan(a0);
    expect(new DataView(a.ram).getUint32(DATA_PAGE * 4096 + 4, true)).toBe(42);
    expect(a.messages().filter((m) => m.t === 'page-wait')).toHaveLength(1);
  });

  it('waits on through SourcePaused (and says so); pauses and resumes while waiting', () => {
    const t = new Thread();
    const a = t.add('lazy', READER, true);
    a.map!.setState(PresentState.SourcePaused);
    t.turns(1);
    a.ring(Request.RUN);
    t.turns(3);
    expect(a.messages().find((m) => m.t === 'page-wait')).toMatchObject({ sourcePaused: true });
    a.ring(Request.PAUSE);
    t.turns(2);
    a.ring(Request.RUN);
    t.turns(2);
    expect(Atomics.load(a.ctl, Ctl.PAGE_WAITING)).toBe(DATA_PAGE + 1);
    a.map!.setState(PresentState.Filling);
    deliver(a, DATA_PAGE, 1);
    a.ring();
    t.turns(3);
    expect(new DataView(a.ram).getUint32(DATA_PAGE * 4096 + 4, true)).toBe(2);
    const states = a.messages().flatMap((m) => (m.t === 'state' ? [m.state] : []));
    expect(states).toEqual(['running', 'paused', 'running']);
  });

  it('crashes when the fill failed for good (never reads the page as zero)', () => {
    const t = new Thread();
    const a = t.add('lazy', READER, true);
    t.turns(1);
    a.ring(Request.RUN);
    t.turns(3);
    a.map!.setState(PresentState.Failed);
    a.ring();
    t.turns(2);
    const crashed = a.messages().find((m) => m.t === 'state' && m.state === 'crashed');
    expect(crashed).toMatchObject({ error: expect.stringContaining('post-copy failed') });
    expect(new DataView(a.ram).getUint32(DATA_PAGE * 4096 + 4, true)).toBe(0);
  });
});

describe('PageRequests (host side)', () => {
  function setup(fetchImpl?: (first: number, count: number) => Promise<void>) {
    const map = PresentMap.initialize(new SharedArrayBuffer(presentMapBytes(PAGES)), PAGES);
    map.setState(PresentState.Filling);
    const asked: [number, number][] = [];
    let wakes = 0;
    const requests = new PageRequests({
      map,
      fetch:
        fetchImpl ??
        ((first, count) => {
          asked.push([first, count]);
          map.markPresent(first, count);
          return Promise.resolve();
        }),
      wake: () => wakes++,
      retryMs: 1,
    });
    return { map, asked, requests, wakes: () => wakes };
  }

  it('asks for the page and its missing neighbours in one request, then rings', async () => {
    const s = setup();
    s.map.markPresent(105, 1);
    s.requests.onMessage({ t: 'page-wait', block: 'ram0', page: 100, sourcePaused: false });
    await new Promise((r) => setImmediate(r));
    expect(s.asked).toEqual([[100, 5]]); // stops at the present page 105
    expect(s.wakes()).toBe(1);
    s.requests.onMessage({ t: 'page-wait', block: 'ram0', page: 250, sourcePaused: false });
    await new Promise((r) => setImmediate(r));
    expect(s.asked.at(-1)).toEqual([250, 6]); // the map's end
    s.requests.onMessage({ t: 'page-arrived', page: 250, waitedUs: 300 });
    s.requests.onMessage({ t: 'page-arrived', page: 100, waitedUs: 100 });
    const w = s.requests.waits();
    expect(w).toMatchObject({ pagesWaited: 2, waiting: 0, samples: 2, requests: 2 });
    expect(w.p50Us).toBe(300);
  });

  it('joins a request in flight instead of asking twice; retries a failed one', async () => {
    let release!: () => void;
    let calls = 0;
    const s = setup((first, count) => {
      calls++;
      if (calls === 1) return Promise.reject(new Error('memstore restarting'));
      return new Promise<void>((resolve) => {
        release = () => {
          s.map.markPresent(first, count);
          resolve();
        };
      });
    });
    s.requests.onMessage({ t: 'page-wait', block: 'ram0', page: 10, sourcePaused: false });
    s.requests.onMessage({ t: 'page-wait', block: 'ram0', page: 12, sourcePaused: false });
    expect(s.requests.waits()).toMatchObject({ waiting: 1, page: 12, sourcePaused: false });
    s.map.setState(PresentState.SourcePaused);
    expect(s.requests.waits().sourcePaused).toBe(true);
    await new Promise((r) => setTimeout(r, 20));
    expect(calls).toBe(2); // the failed one asked again; page 12 joined it
    expect(s.wakes()).toBe(0);
    release();
    await new Promise((r) => setImmediate(r));
    expect(s.wakes()).toBe(2);
  });
});
