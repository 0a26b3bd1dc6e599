import { createLogger } from '@handoff/service';
import { describe, expect, it } from 'vitest';
import type { LeasedRegion, RetakeOutcome } from '../leases/protocol.js';
import type { VmState } from '../model/types.js';
import { recheckLeases, type UncertainLease } from './uncertain.js';

const logger = createLogger({ name: 'test', level: 'silent', format: 'json' });
const fast = { firstMs: 5, maxMs: 20 };

/** A VM left paused by an uncertain migration. */
function pausedVm() {
  const vm = {
    name: 'kv',
    currentState: 'paused' as VmState,
    fenced: null as string | null,
    destroyed: false,
    resumes: 0,
    resume: async () => {
      vm.resumes++;
      vm.currentState = 'running';
    },
    fence: (reason: string) => {
      vm.fenced ??= reason;
    },
  };
  return vm;
}

function lease(name: string, epoch: number) {
  const l: UncertainLease & { epochs: number[] } = {
    regionId: `id-${name}`,
    regionName: name,
    epoch,
    epochs: [],
    setEpoch: (e) => l.epochs.push(e),
  };
  return l;
}

/** memstore answering `answers` in turn (then the last one forever), recording the questions. */
function memstore(...answers: RetakeOutcome[]) {
  const asked: LeasedRegion[] = [];
  return {
    asked,
    retake: (l: LeasedRegion) => {
      asked.push(l);
      return Promise.resolve(answers.length > 1 ? answers.shift()! : answers[0]!);
    },
  };
}

describe('a VM left paused with MIGRATION_UNCERTAIN', () => {
  it('resumes by itself once memstore confirms (by compare-and-set) that every lease is its own', async () => {
    const vm = pausedVm();
    const a = lease('kv-ram0', 3);
    const b = lease('kv-ram1', 7);
    const m = memstore(
      { kind: 'unknown' },
      { kind: 'unknown' },
      { kind: 'ours', epoch: 4 },
      { kind: 'ours', epoch: 8 },
    );
    const said: string[] = [];
    const r = recheckLeases({
      vm,
      leases: [a, b],
      retake: m.retake,
      resume: true,
      log: logger,
      timing: fast,
      onEnd: (s) => said.push(s),
    });
    expect(await r.ended).toBe('resumed');
    expect(vm.resumes).toBe(1);
    expect(m.asked.map((x) => x.regionName)).toEqual(['kv-ram0', 'kv-ram0', 'kv-ram0', 'kv-ram1']);
    // the new epochs are the VM's from now on (its next migration presents them)
    expect([a.epochs, b.epochs]).toEqual([[4], [8]]);
    expect(said).toEqual([expect.stringMatching(/resumed here by itself/)]);
  });

  it('never resumes when the lease moved: fenced for good', async () => {
    const vm = pausedVm();
    const m = memstore({ kind: 'unknown' }, { kind: 'moved' });
    const said: string[] = [];
    const r = recheckLeases({
      vm,
      leases: [lease('kv-ram0', 3)],
      retake: m.retake,
      resume: true,
      log: logger,
      timing: fast,
      onEnd: (s) => said.push(s),
    });
    expect(await r.ended).toBe('fenced');
    expect(vm.resumes).toBe(0);
    expect(vm.fenced).toMatch(/moved/);
    expect(said).toEqual([expect.stringMatching(/runs on the target/)]);
  });

  it('a VM that was paused before the migration stays paused once confirmed', async () => {
    const vm = pausedVm();
    const r = recheckLeases({
      vm,
      leases: [lease('kv-ram0', 3)],
      retake: memstore({ kind: 'ours', epoch: 4 }).retake,
      resume: false,
      log: logger,
      timing: fast,
    });
    expect(await r.ended).toBe('confirmed');
    expect(vm.resumes).toBe(0);
    expect(vm.currentState).toBe('paused');
  });

  it('gives up when someone else acted: resumed by hand, destroyed, or a new migration', async () => {
    const silent = memstore({ kind: 'unknown' });
    const byHand = pausedVm();
    const r1 = recheckLeases({
      vm: byHand,
      leases: [lease('kv-ram0', 3)],
      retake: silent.retake,
      resume: true,
      log: logger,
      timing: fast,
    });
    await new Promise((r) => setTimeout(r, 30));
    byHand.currentState = 'running';
    expect(await r1.ended).toBe('stopped');
    const destroyed = pausedVm();
    const r2 = recheckLeases({
      vm: destroyed,
      leases: [lease('kv-ram0', 3)],
      retake: silent.retake,
      resume: true,
      log: logger,
      timing: fast,
    });
    destroyed.destroyed = true;
    expect(await r2.ended).toBe('stopped');
    const migrating = pausedVm();
    const confirming = memstore({ kind: 'ours', epoch: 4 });
    const r3 = recheckLeases({
      vm: migrating,
      leases: [lease('kv-ram0', 3)],
      retake: confirming.retake,
      resume: true,
      log: logger,
      timing: { firstMs: 50, maxMs: 50 },
    });
    r3.stop();
    expect(await r3.ended).toBe('stopped');
    expect(migrating.resumes).toBe(0);
    expect(confirming.asked).toEqual([]); // stopped before it asked memstore
  });
});
