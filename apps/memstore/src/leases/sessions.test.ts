import { mapFile, type Mapping } from '@handoff/shm';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { openMemstore, type Memstore } from '../memstore.js';
import {
  catalogAfterKill9,
  makeTempDirs,
  recordingLogger,
  testSettings,
  type LogEntry,
  type TempDirs,
} from '../testing/fixtures.js';
import type { ArmedTransfer } from './lease-manager.js';
import type { ProcessStat, ProcessTable } from './processes.js';
import type { PeerCredentials, SessionBinding } from './sessions.js';

/**
 * Lease-holder sessions against a fake process table and clock: binding a hello to a process,
 * judging it (exit, zombie, reused pid, reboot, another pid namespace), fencing its leases, and
 * what survives a restart of memstore.
 */

const OWN_UID = 1000;
const GRACE_MS = 5_000;

/** A process table the test edits: pid -> stat; boot id. */
class FakeTable implements ProcessTable {
  readonly procs = new Map<number, ProcessStat>();
  boot = 'boot-1';
  unreadable = false;
  stat(pid: number): ProcessStat | undefined {
    if (this.unreadable) throw new Error('EACCES: /proc is mounted with hidepid');
    return this.procs.get(pid);
  }
  bootId(): string {
    return this.boot;
  }
  run(pid: number, startTime: number): void {
    this.procs.set(pid, { state: 'S', startTime });
  }
}

let dirs: TempDirs;
let table: FakeTable;
let clock: number;
let m: Memstore;
let log: LogEntry[];
const mappings: Mapping<SharedArrayBuffer>[] = [];

function open(): Memstore {
  const rec = recordingLogger();
  log = rec.entries;
  return openMemstore(
    testSettings(dirs, { holderGraceMs: GRACE_MS, holderSweepMs: 3_600_000 }),
    rec.logger,
    { now: () => clock, processes: table, ownUid: OWN_UID },
  );
}

function restart(): void {
  m.close();
  m = open();
}

const peer = (pid: number, uid = OWN_UID): PeerCredentials => ({ pid, uid, gid: uid });

/** A hello from process `pid` as vmm `vmmId`. */
function hello(vmmId: string, pid: number, instance = `inst-${pid}-xxxx`): SessionBinding {
  return m.sessions.hello(m.sessions.openSession(vmmId).token, instance, peer(pid));
}

/** A volatile region leased by `holder`. */
function leased(name: string, holder: string): { name: string } {
  m.regions.create({ name, size: 8192n, kind: 'volatile' });
  m.leases.acquire({ name }, holder);
  return { name };
}

const liveness = (name: string) => m.regions.get({ name }).holder?.liveness;

/** Runs the re-checks a closed connection scheduled (the first runs at once). */
const afterClose = () => new Promise((r) => setTimeout(r, 5));

beforeEach(() => {
  dirs = makeTempDirs();
  table = new FakeTable();
  clock = 1_000_000;
  m = open();
});

afterEach(() => {
  for (const x of mappings.splice(0)) x.close();
  m.close();
  dirs.cleanup();
});

describe('a session', () => {
  it('binds a hello to the process that connected and records it in the catalog', () => {
    table.run(100, 5555);
    const b = hello('vmm-a', 100, 'instance-a1');
    expect(b).toEqual({ vmmId: 'vmm-a', pid: 100, instance: 'instance-a1' });
    expect(m.catalog.getHolderProcess('vmm-a')).toEqual({
      vmmId: 'vmm-a',
      pid: 100,
      startTime: 5555,
      bootId: 'boot-1',
      instance: 'instance-a1',
      openedAt: clock,
      goneAt: null,
    });
    const r = leased('ram', 'vmm-a/vm1');
    expect(m.regions.get(r).holder).toEqual({
      liveness: 'alive',
      vmmId: 'vmm-a',
      pid: 100,
      since: new Date(clock),
      connected: true,
    });
    // A second connection of the same process joins the session.
    expect(hello('vmm-a', 100, 'instance-a1')).toEqual(b);
  });

  it('refuses a peer of another user but root, and a token that is unknown, used or expired', () => {
    table.run(100, 1);
    table.run(101, 1);
    const t = m.sessions.openSession('vmm-a').token;
    expect(() => m.sessions.hello(t, 'instance-a1', peer(100, 4242))).toThrow(
      expect.objectContaining({ code: 'SERVICE_PERMISSION_DENIED' }),
    );
    // Root may; the token refused above was not used up by the refusal.
    expect(m.sessions.hello(t, 'instance-a1', peer(100, 0)).vmmId).toBe('vmm-a');
    expect(() => m.sessions.hello(t, 'instance-a1', peer(100))).toThrow(
      expect.objectContaining({ code: 'SERVICE_UNAUTHENTICATED' }),
    );
    const late = m.sessions.openSession('vmm-a').token;
    clock += 30_001;
    expect(() => m.sessions.hello(late, 'instance-a1', peer(100))).toThrow(
      expect.objectContaining({ code: 'SERVICE_UNAUTHENTICATED' }),
    );
    // A process that exited between its connect and its hello is not bound.
    expect(() => hello('vmm-b', 999)).toThrow(
      expect.objectContaining({ code: 'SERVICE_UNAUTHENTICATED' }),
    );
    expect(() => m.sessions.openSession('a/b')).toThrow(
      expect.objectContaining({ code: 'REGION_INVALID_ARGUMENT' }),
    );
    for (let k = 0; k < 1100; k++) m.sessions.openSession('vmm-c');
    expect(m.sessions.tokenCount).toBe(1024);
  });

  it('a holder that never had a session is unknown, and only an operator can take its lease', () => {
    const r = leased('ram', 'vmm-x/vm1');
    leased('odd', 'no-vmm-prefix');
    expect(m.regions.get(r).holder).toMatchObject({ liveness: 'unknown', vmmId: 'vmm-x', pid: 0 });
    expect(m.regions.get({ name: 'odd' }).holder).toMatchObject({ vmmId: undefined });
    m.sessions.sweep();
    expect(m.regions.get(r).lease?.holder).toBe('vmm-x/vm1');
    const { fenced } = m.forceRelease(r);
    expect(fenced).toMatchObject({ holder: 'vmm-x/vm1', epoch: 2, reason: 'operator' });
    expect(m.regions.get(r)).toMatchObject({
      lease: undefined,
      holder: undefined,
      fenced: { holder: 'vmm-x/vm1', epoch: 2, reason: 'operator' },
    });
    // Unleased: answered as it is.
    expect(m.forceRelease(r).fenced).toBeUndefined();
    // The next grant is epoch + 1 and forgets the fence.
    expect(m.leases.acquire(r, 'vmm-y/vm1').epoch).toBe(3);
    expect(m.regions.get(r).fenced).toBeUndefined();
  });
});

describe('a holder process that is gone', () => {
  it('has its leases fenced once its connection closes: holder cleared, epoch + 1, region kept', async () => {
    table.run(100, 5555);
    const b = hello('vmm-a', 100);
    const r1 = leased('ram', 'vmm-a/vm1');
    const r2 = leased('ram2', 'vmm-a/vm2');
    const other = leased('theirs', 'vmm-b/vm1');
    m.leases.transfer(r2, 'vmm-a/vm2', 1, 'vmm-a/vm2'); // epoch 2
    const before = m.regions.get(r1);
    // Closing alone fences nothing while the process runs.
    m.sessions.closed(b);
    await afterClose();
    expect(m.regions.get(r1).lease?.holder).toBe('vmm-a/vm1');
    expect(liveness('ram')).toBe('alive');
    // It exits; the next look (a sweep here) fences.
    table.procs.delete(100);
    clock += 10;
    m.sessions.sweep();
    expect(m.regions.get(r1)).toMatchObject({
      lease: undefined,
      state: 'active',
      path: before.path,
      identity: before.identity,
      fenced: { holder: 'vmm-a/vm1', epoch: 2, reason: 'holder-gone', at: new Date(clock) },
    });
    expect(m.regions.get(r2).fenced).toMatchObject({ holder: 'vmm-a/vm2', epoch: 3 });
    expect(m.regions.get(other).lease?.holder).toBe('vmm-b/vm1');
    expect(m.catalog.getHolderProcess('vmm-a')?.goneAt).toBe(clock);
    // The dead holder's epoch is stale; the region may be leased again at epoch + 1.
    expect(() => m.leases.release(r1, 'vmm-a/vm1', 1)).toThrow(
      expect.objectContaining({ code: 'LEASE_STALE_EPOCH' }),
    );
    expect(m.leases.acquire(r1, 'vmm-a/vm1').epoch).toBe(3);
    const fencedLog = log.filter((e) => e.msg.startsWith('lease fenced'));
    expect(fencedLog.map((e) => e.fields)).toEqual([
      expect.objectContaining({ name: 'ram', holder: 'vmm-a/vm1', epoch: 2 }),
      expect.objectContaining({ name: 'ram2', holder: 'vmm-a/vm2', epoch: 3 }),
    ]);
  });

  it('has its clone attachments forgotten once its process is gone, so its snapshots unpin', () => {
    table.run(100, 5555);
    hello('vmm-a', 100);
    const t = m.regions.create({ name: 'tpl', size: 8192n, kind: 'volatile' });
    m.templates.seal({ name: 'tpl' }, undefined);
    m.templates.attachClone({ name: 'tpl' }, 'vmm-a/c1');
    m.templates.attachClone({ name: 'tpl' }, 'vmm-a/c2');
    m.templates.attachClone({ name: 'tpl' }, 'vmm-a_b/c1'); // another vmm: "_" is no wildcard
    table.procs.delete(100);
    clock += 10;
    m.sessions.sweep();
    expect(m.catalog.clonesOf(t.id).map((c) => c.holder)).toEqual(['vmm-a_b/c1']);
    expect(log.some((e) => e.msg.includes('2 clone(s) detached'))).toBe(true);
  });

  it('is found at once when its connection closes after it became a zombie', async () => {
    table.run(100, 5555);
    const b = hello('vmm-a', 100);
    const r = leased('ram', 'vmm-a/vm1');
    table.procs.set(100, { state: 'Z', startTime: 5555 });
    m.sessions.closed(b);
    await afterClose();
    expect(m.regions.get(r).lease).toBeUndefined();
    expect(m.regions.get(r).fenced?.reason).toBe('holder-gone');
  });

  it('counts a reused pid (another start time) as gone', () => {
    table.run(100, 5555);
    hello('vmm-a', 100);
    const r = leased('ram', 'vmm-a/vm1');
    table.run(100, 7777);
    m.sessions.sweep();
    expect(m.regions.get(r).lease).toBeUndefined();
  });

  it('fences at the durability of the region (no fsync for volatile regions on tmpfs)', () => {
    table.run(100, 5555);
    hello('vmm-a', 100);
    leased('ram', 'vmm-a/vm1');
    m.regions.create({ name: 'disk', size: 8192n, kind: 'persistent' });
    m.leases.acquire({ name: 'disk' }, 'vmm-a/vm2');
    table.procs.delete(100);
    const spy = vi.spyOn(m.catalog, 'transaction');
    try {
      m.sessions.sweep();
      // disk (persistent) first: same creation time, by name
      expect(spy.mock.calls.map((c) => c[1])).toEqual(['power-loss', 'process-crash']);
    } finally {
      spy.mockRestore();
    }
    // In the files once fenced: kill -9 of memstore right after loses nothing.
    const copy = catalogAfterKill9(dirs.stateDir, join(dirs.stateDir, 'after-kill'));
    try {
      expect(copy.getByName('ram')).toMatchObject({ leaseHolder: null, leaseEpoch: 2 });
    } finally {
      copy.close();
    }
  });

  it('a lease granted after its process was found gone (no session) reads unknown', () => {
    table.run(100, 5555);
    hello('vmm-a', 100);
    table.procs.delete(100);
    m.sessions.sweep();
    clock += 1;
    const r = leased('late', 'vmm-a/vm9');
    expect(m.regions.get(r).holder?.liveness).toBe('unknown');
    m.sessions.sweep();
    expect(m.regions.get(r).lease?.holder).toBe('vmm-a/vm9');
  });
});

describe('a restarted vmm', () => {
  it('is refused while its old process still runs; once that is gone, the old leases are fenced before its hello returns', () => {
    table.run(100, 5555);
    hello('vmm-a', 100);
    const r = leased('ram', 'vmm-a/vm1');
    table.run(200, 6666);
    expect(() => hello('vmm-a', 200)).toThrow(
      expect.objectContaining({
        code: 'LEASE_SESSION_CONFLICT',
        message: expect.stringContaining('pid 100') as string,
      }),
    );
    expect(m.regions.get(r).lease?.holder).toBe('vmm-a/vm1');
    // kill -9 of the old process; the new one says hello before any sweep ran.
    table.procs.delete(100);
    const b = hello('vmm-a', 200);
    expect(b.pid).toBe(200);
    expect(m.regions.get(r).lease).toBeUndefined();
    expect(m.regions.get(r).fenced?.holder).toBe('vmm-a/vm1');
    // The new process may lease again at once; it is the one reported now.
    m.leases.acquire(r, 'vmm-a/vm1');
    expect(m.regions.get(r).holder).toMatchObject({ liveness: 'alive', pid: 200 });
    expect(m.catalog.getHolderProcess('vmm-a')).toMatchObject({ pid: 200, goneAt: null });
  });
});

describe('after a restart of memstore', () => {
  it('keeps the leases of a process that still runs and fences those of one that exited', () => {
    table.run(100, 5555);
    table.run(101, 5556);
    hello('vmm-a', 100);
    hello('vmm-b', 101);
    const a = leased('a', 'vmm-a/vm1');
    const b = leased('b', 'vmm-b/vm1');
    table.procs.delete(101); // died while memstore was down
    restart();
    expect(m.regions.get(a)).toMatchObject({ lease: { holder: 'vmm-a/vm1' } });
    expect(m.regions.get(a).holder).toMatchObject({ liveness: 'alive', connected: false });
    expect(m.regions.get(b)).toMatchObject({
      lease: undefined,
      fenced: { holder: 'vmm-b/vm1' },
    });
    // The running one reconnects: the same process, the same session.
    expect(hello('vmm-a', 100).pid).toBe(100);
    expect(m.regions.get(a).holder?.connected).toBe(true);
  });

  it('fences every holder of the previous boot', () => {
    table.run(100, 5555);
    hello('vmm-a', 100);
    const a = leased('a', 'vmm-a/vm1');
    table.boot = 'boot-2'; // same pid and start time after a reboot: still another process
    restart();
    expect(m.regions.get(a).lease).toBeUndefined();
  });
});

describe('a holder in another pid namespace (pid 0)', () => {
  it('is alive while connected, unknown when not, gone after the grace period', () => {
    const b = hello('vmm-c', 0, 'container-1');
    const r = leased('ram', 'vmm-c/vm1');
    expect(m.regions.get(r).holder).toMatchObject({ liveness: 'alive', pid: 0, connected: true });
    m.sessions.closed(b);
    m.sessions.sweep();
    expect(m.regions.get(r).holder).toMatchObject({
      liveness: 'unknown',
      since: new Date(clock),
    });
    // A reconnect of the same instance within the grace keeps everything.
    clock += GRACE_MS - 1;
    const again = hello('vmm-c', 0, 'container-1');
    m.sessions.sweep();
    expect(liveness('ram')).toBe('alive');
    m.sessions.closed(again);
    clock += GRACE_MS;
    m.sessions.sweep();
    expect(m.regions.get(r).lease).toBeUndefined();
    expect(m.regions.get(r).fenced?.holder).toBe('vmm-c/vm1');
  });

  it('a new instance replaces a disconnected one at once, not a connected one', () => {
    hello('vmm-c', 0, 'container-1');
    const r = leased('ram', 'vmm-c/vm1');
    expect(() => hello('vmm-c', 0, 'container-2')).toThrow(
      expect.objectContaining({ code: 'LEASE_SESSION_CONFLICT' }),
    );
    m.sessions.closed({ vmmId: 'vmm-c', pid: 0, instance: 'container-1' });
    hello('vmm-c', 0, 'container-2');
    expect(m.regions.get(r).lease).toBeUndefined();
  });

  it('gets the grace period again after a restart of memstore', () => {
    hello('vmm-c', 0, 'container-1');
    const r = leased('ram', 'vmm-c/vm1');
    clock += 60_000;
    restart();
    m.sessions.sweep();
    expect(m.regions.get(r).holder?.liveness).toBe('unknown');
    clock += GRACE_MS;
    m.sessions.sweep();
    expect(m.regions.get(r).lease).toBeUndefined();
  });

  it('is judged by its connection when /proc cannot be read', () => {
    table.run(100, 5555);
    table.unreadable = true;
    const b = hello('vmm-a', 100);
    expect(b.pid).toBe(0);
    const r = leased('ram', 'vmm-a/vm1');
    m.sessions.closed(b);
    clock += GRACE_MS;
    m.sessions.sweep();
    expect(m.regions.get(r).lease).toBeUndefined();
  });
});

describe('arms of a gone holder', () => {
  /** The target's CAS on its own mapping of the arms file. */
  function flip(a: ArmedTransfer): boolean {
    const map = mapFile(a.armsPath);
    mappings.push(map);
    const words = new Int32Array(map.buffer);
    return (
      Atomics.compareExchange(words, a.slotOffset / 4, a.armedWord, a.flippedWord) === a.armedWord
    );
  }

  it('are settled first: a flipped arm already moved the lease, an armed one is cancelled and the lease fenced', () => {
    table.run(100, 1);
    table.run(200, 2);
    hello('vmm-a', 100);
    hello('vmm-b', 200);
    const moved = leased('moved', 'vmm-a/vm1');
    const kept = leased('kept', 'vmm-a/vm2');
    const flipped = m.leases.arm(moved, 'vmm-a/vm1', 1, 'vmm-b/vm1');
    const armed = m.leases.arm(kept, 'vmm-a/vm2', 1, 'vmm-b/vm2');
    expect(flip(flipped)).toBe(true);
    table.procs.delete(100); // the source dies mid-migration
    m.sessions.sweep();
    // The flip won: the target holds it, alive, untouched.
    expect(m.regions.get(moved)).toMatchObject({
      lease: { holder: 'vmm-b/vm1', epoch: 2 },
      fenced: undefined,
    });
    // Not flipped: cancelled (a later flip fails), the dead source's lease fenced.
    expect(flip(armed)).toBe(false);
    expect(m.regions.get(kept)).toMatchObject({
      lease: undefined,
      fenced: { holder: 'vmm-a/vm2', epoch: 2 },
    });
    expect(m.leases.armedCount).toBe(0);
  });

  it('a target that flipped and then died: the flip is committed, then its lease fenced', () => {
    table.run(100, 1);
    table.run(200, 2);
    hello('vmm-a', 100);
    hello('vmm-b', 200);
    const r = leased('ram', 'vmm-a/vm1');
    expect(flip(m.leases.arm(r, 'vmm-a/vm1', 1, 'vmm-b/vm1'))).toBe(true);
    table.procs.delete(200);
    m.sessions.sweep();
    expect(m.regions.get(r)).toMatchObject({
      lease: undefined,
      fenced: { holder: 'vmm-b/vm1', epoch: 3 },
    });
  });
});

describe('ForceReleaseLease', () => {
  it('is refused while the holder is alive, judged at the call, not by the last sweep', () => {
    table.run(100, 5555);
    hello('vmm-a', 100);
    const r = leased('ram', 'vmm-a/vm1');
    expect(() => m.forceRelease(r)).toThrow(
      expect.objectContaining({
        code: 'LEASE_HOLDER_ALIVE',
        message: expect.stringMatching(/vmm-a\/vm1.*pid 100.*alive/) as string,
      }),
    );
    table.procs.delete(100); // no sweep ran since
    const { fenced } = m.forceRelease(r);
    // The call found the process gone and fenced it as such, before the operator's turn.
    expect(fenced).toMatchObject({ holder: 'vmm-a/vm1', epoch: 2, reason: 'holder-gone' });
    expect(m.regions.get(r).fenced).toMatchObject({ holder: 'vmm-a/vm1', reason: 'holder-gone' });
  });
});
