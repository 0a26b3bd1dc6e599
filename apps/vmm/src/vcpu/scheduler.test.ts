import { describe, expect, it } from 'vitest';
import { asm, elfOf, li } from '../cpu/test-asm.js';
import { ControlDevice } from '../devices/control.js';
import { createMachine, type Machine, type MachineOptions } from '../machine/machine.js';
import { finishSlot, SLOT_BYTES, SlotState, tryTakeState } from '../switchover/slot.js';
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

const RAM_SIZE = 1 << 20;
const [t0, t1, t2, s0, s1] = [5, 6, 7, 8, 9];

/** Busy forever. */
const SPIN = elfOf([asm.addi(t0, t0, 1), asm.jal(0, -4)]);
/** WFI forever, every interrupt off: only the host could wake it. */
const IDLE = elfOf([asm.wfi(), asm.jal(0, -4)]);
/** WFI with the CLINT timer armed 100 ms ahead, again and again. */
const TIMER = elfOf([
  ...li(s0, 0x0200_4000), // mtimecmp
  ...li(s1, 0x0200_bff8), // mtime
  asm.addi(t0, 0, 0x80),
  asm.csrrs(0, 0x304, t0), // mie.MTIE
  asm.lw(t1, s1, 0), // loop: mtime lo
  ...li(t2, 1_000_000), // 100 ms at 10 MHz
  asm.add(t1, t1, t2),
  asm.addi(t2, 0, -1),
  asm.sw(t2, s0, 4), // mtimecmp hi = max first
  asm.sw(t1, s0, 0),
  asm.sw(0, s0, 4), // (mtime stays below 2^32 in a test)
  asm.wfi(),
  asm.jal(0, -36),
]);

/** One VM as the host side of a test drives it. */
class TestVm {
  readonly ctl: Int32Array;
  private readonly ctl64: BigInt64Array;
  private readonly ctlF64: Float64Array;

  constructor(
    readonly id: number,
    control: SharedArrayBuffer,
    private readonly thread: TestThread,
  ) {
    this.ctl = new Int32Array(control);
    this.ctl64 = new BigInt64Array(control);
    this.ctlF64 = new Float64Array(control);
  }

  request(r: number, saveId?: number): void {
    if (r === Request.PAUSE)
      this.ctlF64[Ctl.PAUSE_REQUESTED_AT] = performance.timeOrigin + performance.now();
    Atomics.store(this.ctl, Ctl.REQUEST, r);
    if (saveId !== undefined) Atomics.store(this.ctl, Ctl.SAVE_REQ, saveId);
    Atomics.add(this.ctl, Ctl.DOORBELL, 1);
    this.thread.wake();
  }

  get instret(): number {
    return Number(Atomics.load(this.ctl64, Ctl.INSTRET64));
  }

  messages(): VcpuMessage[] {
    return this.thread.posted.filter((p) => p.id === this.id).map((p) => p.m);
  }

  states(): string[] {
    return this.messages().flatMap((m) => (m.t === 'state' ? [m.state] : []));
  }
}

/** A scheduler driven turn by turn in this thread; it never sleeps (sleeps are recorded). */
class TestThread {
  readonly control = new SharedArrayBuffer(THREAD_CONTROL_BYTES);
  readonly ctl = new Int32Array(this.control);
  readonly inbox: ThreadCommand[] = [];
  readonly posted: ThreadMessage[] = [];
  /** Each sleep: how many words, and the timeout. */
  readonly sleeps: { words: number; timeoutMs: number }[] = [];
  readonly scheduler: Scheduler;
  private nextId = 0;

  constructor(make?: (name: string, opts: MachineOptions) => Machine) {
    let naming = '';
    this.scheduler = new Scheduler({
      control: this.control,
      hush: new SharedArrayBuffer(4),
      post: (msg) => this.posted.push(msg),
      receive: () => {
        const msg = this.inbox.shift();
        if (msg?.t === 'add') naming = msg.init.name;
        return msg;
      },
      sleep: (words, timeoutMs) => this.sleeps.push({ words: words.length, timeoutMs }),
      warmUp: false,
      ...(make !== undefined ? { createMachine: (opts) => make(naming, opts ?? {}) } : {}),
    });
  }

  wake(): void {
    Atomics.add(this.ctl, ThreadCtl.WAKE, 1);
  }

  add(name: string, elf: Uint8Array): TestVm {
    const id = ++this.nextId;
    const control = new SharedArrayBuffer(CONTROL_BYTES);
    const words = (RAM_SIZE >>> 12) >>> 5;
    this.inbox.push({
      t: 'add',
      id,
      init: {
        name,
        control,
        ram: new SharedArrayBuffer(RAM_SIZE),
        ramSize: RAM_SIZE,
        bitmaps: new SharedArrayBuffer(3 * words * 4),
        dirty: [0, words * 4],
        touched: 2 * words * 4,
        bitmapWords: words,
        ramNotZero: false,
        elf,
        incoming: false,
        identity: ControlDevice.randomIdentity(),
        hostArgs: new Uint8Array(0),
      },
    });
    this.wake();
    return new TestVm(id, control, this);
  }

  turns(n: number): void {
    for (let k = 0; k < n; k++) this.scheduler.turn();
  }

  get runnable(): number {
    return Atomics.load(this.ctl, ThreadCtl.RUNNABLE);
  }
}

describe('Scheduler', () => {
  it('runs its VMs round-robin; one waiting in WFI costs no slice', () => {
    const t = new TestThread();
    const a = t.add('a', SPIN);
    const b = t.add('b', SPIN);
    const c = t.add('c', IDLE);
    t.turns(1);
    expect(Atomics.load(t.ctl, ThreadCtl.VMS)).toBe(3);
    for (const vm of [a, b, c]) vm.request(Request.RUN);
    const slept = t.sleeps.length; // once, while all three were created
    t.turns(10);
    expect(t.runnable).toBe(2);
    const idleAt = c.instret;
    const [a0, b0] = [a.instret, b.instret];
    t.turns(40);
    expect(a.instret).toBeGreaterThan(a0);
    expect(b.instret).toBeGreaterThan(b0);
    expect(c.instret).toBe(idleAt);
    expect(t.sleeps.length).toBe(slept); // always something to run since
  });

  it('pauses, resumes and stops one VM while its thread-mates run', () => {
    const t = new TestThread();
    const a = t.add('a', SPIN);
    const b = t.add('b', SPIN);
    t.turns(1);
    a.request(Request.RUN);
    b.request(Request.RUN);
    t.turns(10);
    a.request(Request.PAUSE);
    t.turns(1);
    const paused = a.messages().find((m) => m.t === 'state' && m.state === 'paused');
    expect(paused).toMatchObject({ t: 'state', state: 'paused' });
    expect((paused as { latencyMs: number }).latencyMs).toBeGreaterThanOrEqual(0);
    const [a0, b0] = [a.instret, b.instret];
    t.turns(20);
    expect(a.instret).toBe(a0);
    expect(b.instret).toBeGreaterThan(b0);
    a.request(Request.RUN);
    t.turns(20);
    expect(a.instret).toBeGreaterThan(a0);
    expect(a.states()).toEqual(['running', 'paused', 'running']);
    a.request(Request.STOP);
    t.turns(1);
    expect(a.messages().at(-1)).toEqual({ t: 'stopped' });
    expect(Atomics.load(t.ctl, ThreadCtl.VMS)).toBe(1);
    const b1 = b.instret;
    t.turns(10);
    expect(b.instret).toBeGreaterThan(b1);
  });

  it('handles a command that arrives on a later turn than the ring after it', () => {
    const t = new TestThread();
    const a = t.add('a', IDLE);
    t.turns(1);
    a.request(Request.RUN);
    t.turns(3);
    expect(a.states()).toEqual(['running']);
    // The host posts a command and rings; the thread read its messages just before the post
    // and sees the doorbell first (a ring with nothing to do), the message on the next turn.
    Atomics.add(a.ctl, Ctl.DOORBELL, 1);
    t.wake();
    t.turns(1);
    t.inbox.push({ t: 'cmd', id: a.id, cmd: { t: 'input', bytes: new Uint8Array([1, 2, 3]) } });
    t.wake();
    t.turns(3);
    expect(Atomics.load(a.ctl, Ctl.INPUT_TAKEN)).toBe(3);
  });

  it('crashes a VM whose vCPU throws, alone', () => {
    const t = new TestThread((name, opts) => {
      const m = createMachine(opts);
      if (name !== 'bad') return m;
      let runs = 0;
      return {
        ...m,
        run: (budget: number) => {
          if (++runs === 3) throw new Error('boom');
          return m.run(budget);
        },
      };
    });
    const bad = t.add('bad', SPIN);
    const good = t.add('good', SPIN);
    t.turns(1);
    bad.request(Request.RUN);
    good.request(Request.RUN);
    t.turns(20);
    expect(bad.messages().at(-1)).toMatchObject({
      t: 'state',
      state: 'crashed',
      error: 'vCPU failure: boom',
    });
    const g0 = good.instret;
    t.turns(10);
    expect(good.instret).toBeGreaterThan(g0);
    bad.request(Request.STOP);
    t.turns(1);
    expect(bad.messages().at(-1)).toEqual({ t: 'stopped' });
    expect(good.messages().map((m) => m.t)).not.toContain('stopped');
  });

  it('sleeps when no VM wants the CPU: until the earliest WFI timer, else until woken', () => {
    const t = new TestThread();
    t.turns(1);
    expect(t.sleeps.at(-1)).toEqual({ words: 1, timeoutMs: Infinity });
    const idle = t.add('idle', IDLE);
    t.turns(1);
    idle.request(Request.RUN);
    t.turns(5);
    expect(t.sleeps.at(-1)).toEqual({ words: 1, timeoutMs: Infinity });
    const timer = t.add('timer', TIMER);
    t.turns(1);
    timer.request(Request.RUN);
    t.turns(5);
    const last = t.sleeps.at(-1)!;
    expect(last.timeoutMs).toBeGreaterThan(50);
    expect(last.timeoutMs).toBeLessThanOrEqual(100);
  });

  it('reports the pause of a switchover source only once the target took over', () => {
    const t = new TestThread();
    const src = t.add('src', SPIN);
    const mate = t.add('mate', SPIN);
    t.turns(1);
    src.request(Request.RUN);
    mate.request(Request.RUN);
    t.turns(10);
    const slot = new SharedArrayBuffer(SLOT_BYTES);
    Atomics.store(new Int32Array(slot), 2, SlotState.ARMED);
    t.inbox.push({
      t: 'cmd',
      id: src.id,
      cmd: { t: 'switchover-out', slot, saveId: 1, compact: true },
    });
    src.request(Request.PAUSE, 1);
    t.turns(1);
    expect(Atomics.load(new Int32Array(slot), 2)).toBe(SlotState.READY); // published
    expect(src.states()).toEqual(['running']); // not reported yet
    const m0 = mate.instret;
    t.turns(10);
    expect(mate.instret).toBeGreaterThan(m0); // the thread runs its other VMs meanwhile
    mate.request(Request.PAUSE);
    t.turns(2);
    // Nothing runnable: the thread sleeps on its wake word and the slot, at most 100 ms.
    expect(t.sleeps.at(-1)!.words).toBe(2);
    expect(t.sleeps.at(-1)!.timeoutMs).toBeLessThanOrEqual(100);
    expect(tryTakeState(slot)?.kind).toBe('state'); // the target takes it...
    finishSlot(slot, SlotState.RUNNING, Date.now()); // ...and runs the guest
    t.turns(1);
    expect(src.messages().slice(-2)).toMatchObject([
      { t: 'saved', id: 1, state: null, published: true },
      { t: 'state', state: 'paused' },
    ]);
  });

  it('holds a throttled VM back for its share of each period; its thread-mate and the sleep fill the rest', () => {
    const t = new TestThread();
    const a = t.add('a', SPIN);
    const b = t.add('b', SPIN);
    t.turns(1);
    a.request(Request.RUN);
    b.request(Request.RUN);
    t.turns(20); // both warm: budgets grown
    Atomics.store(a.ctl, Ctl.THROTTLE, 9000); // 90 % held back
    const [a0, b0] = [a.instret, b.instret];
    const ranA = () => a.instret - a0;
    const ranB = () => b.instret - b0;
    t.turns(400);
    expect(ranA()).toBeGreaterThan(0); // held, never starved
    expect(ranB()).toBeGreaterThan(3 * ranA());
    // Alone (its mate paused), every turn after a slice finds it held: the thread sleeps until
    // the hold ends, 9 slices long — bounded (the stub sleep returns at once).
    b.request(Request.PAUSE);
    t.turns(2);
    const slept = t.sleeps.length;
    t.turns(50);
    const holds = t.sleeps.slice(slept);
    expect(holds.length).toBeGreaterThan(0);
    for (const h of holds) {
      expect(h.words).toBe(1);
      expect(h.timeoutMs).toBeGreaterThan(0);
      expect(h.timeoutMs).toBeLessThan(1000);
    }
    // Released: it runs on the next turn, whatever hold it had.
    Atomics.store(a.ctl, Ctl.THROTTLE, 0);
    const a1 = a.instret;
    t.turns(1);
    expect(a.instret).toBeGreaterThan(a1);
    const before = t.sleeps.length;
    t.turns(20);
    expect(t.sleeps.length).toBe(before); // never held again
  });
});
