import { describe, expect, it } from 'vitest';
import { emptyMigrationInfo, resolveCapabilities, type MigrationStatus } from '@handoff/qapi';
import type { RegionLease } from '../clients/memstore-client.js';
import type { Job } from './job.js';
import { judge, leftPausedOnSource, type Evidence, type Sighting } from './outcome.js';

const job = (regions: string[] = ['kv-ram0']): Job => ({
  id: 'mig-1',
  kind: 'migrate',
  vm: 'kv',
  sourceVmm: 'vmm-a',
  targetVmm: 'vmm-b',
  sourceAddress: 'a:1',
  targetAddress: 'b:1',
  capabilities: resolveCapabilities({ 'bypass-shared-memory': true }),
  parameters: {},
  info: emptyMigrationInfo('active'),
  createdAt: new Date(0),
  finishedAt: undefined,
  children: [],
  parent: '',
  regions,
  outcome: undefined,
  snapshot: undefined,
  snapshotResult: undefined,
});

const held = (
  holder: string | null,
  liveness: RegionLease['holderLiveness'] = 'unknown',
): RegionLease[] => [
  { region: 'kv-ram0', holder, epoch: 4, holderLiveness: liveness, fenced: null },
];

/** A lease memstore fenced from `from` (its process gone, or by an operator). */
const fenced = (
  from: string,
  because: 'holder-gone' | 'operator' = 'holder-gone',
): RegionLease[] => [
  {
    region: 'kv-ram0',
    holder: null,
    epoch: 5,
    holderLiveness: because === 'holder-gone' ? 'gone' : 'unknown',
    fenced: { from, because },
  },
];

const answers = (state: Sighting['state']): Sighting => ({ reach: 'answers', state });
const gone: Sighting = { reach: 'refused', state: undefined };
const silent: Sighting = { reach: 'silent', state: undefined };

function evidence(p: {
  source: Sighting;
  target: Sighting;
  leases: readonly RegionLease[] | undefined;
  migration?: MigrationStatus | null;
}): Evidence {
  const m = p.migration;
  return {
    source: {
      ...p.source,
      migration: m === undefined || m === null ? (m ?? undefined) : emptyMigrationInfo(m),
    },
    target: { ...p.target, arrival: undefined },
    leases: p.leases,
  };
}

const verdictOf = (e: Evidence, cancelled = false, j = job()) => {
  const v = judge(j, e, { cancelled });
  return { status: v.status, ...v.outcome };
};

describe('judge: where the VM is after a migration ended without the source final word', () => {
  it('the target runs it with the lease: completed, whatever the source says', () => {
    const onTarget = { target: answers('running'), leases: held('vmm-b/kv') };
    expect(verdictOf(evidence({ ...onTarget, source: answers('postmigrate') }))).toEqual({
      status: 'completed',
      where: 'target',
      vmm: 'vmm-b',
      detail: 'VM kv runs on vmm-b with the lease of region kv-ram0',
    });
    expect(verdictOf(evidence({ ...onTarget, source: silent })).detail).toBe(
      'VM kv runs on vmm-b with the lease of region kv-ram0; vmm-a did not answer (it does not ' +
        'answer)',
    );
    // memstore could not be asked: the target's word alone
    expect(
      verdictOf(evidence({ source: gone, target: answers('paused'), leases: undefined })),
    ).toMatchObject({ status: 'completed', where: 'target' });
  });

  it('a copy left on the source beside a running target is named, to be destroyed there', () => {
    const v = verdictOf(
      evidence({ source: answers('paused'), target: answers('running'), leases: [] }),
      false,
      job([]),
    );
    expect(v).toMatchObject({ status: 'completed', where: 'target' });
    expect(v.detail).toMatch(/vmm-a keeps a paused copy that must never run: destroy it there/);
  });

  it('the source kept it: failed, or cancelled when the job was cancelled and so was the migration', () => {
    const e = (m: MigrationStatus) =>
      evidence({
        source: answers('running'),
        target: answers(null),
        leases: held('vmm-a/kv'),
        migration: m,
      });
    expect(verdictOf(e('failed'))).toEqual({
      status: 'failed',
      where: 'source',
      vmm: 'vmm-a',
      detail: 'VM kv runs on vmm-a',
    });
    expect(verdictOf(e('cancelled'), true).status).toBe('cancelled');
    expect(verdictOf(e('failed'), true).status).toBe('failed');
    const paused = evidence({
      source: answers('paused'),
      target: silent,
      leases: held('vmm-a/kv'),
    });
    expect(verdictOf(paused).detail).toBe('VM kv is paused on vmm-a');
  });

  it('lost with the source: its process is gone, does not answer, or restarted without it', () => {
    const lost = (source: Sighting, liveness: RegionLease['holderLiveness'] = 'unknown') =>
      verdictOf(evidence({ source, target: answers(null), leases: held('vmm-a/kv', liveness) }));
    expect(lost(gone)).toEqual({
      status: 'failed',
      where: 'lost',
      vmm: 'vmm-a',
      detail:
        'VM kv was lost with vmm-a (its process is gone); its memory is in region kv-ram0 (kept)',
    });
    // one that does not answer may still run it: no claim
    expect(lost(silent)).toMatchObject({ status: 'failed', where: 'unknown' });
    expect(lost(silent).detail).toMatch(/vmm-a does not answer: the VM may still run there/);
    // memstore saying the lease holder is gone settles it
    expect(lost(silent, 'gone').detail).toMatch(/lost with vmm-a \(its process is gone\)/);
    // ... and so does a lease memstore fenced because its holder died
    const fencedAway = verdictOf(
      evidence({ source: silent, target: answers(null), leases: fenced('vmm-a/kv') }),
    );
    expect(fencedAway).toMatchObject({ where: 'lost', vmm: 'vmm-a' });
    expect(fencedAway.detail).toMatch(
      /lost with vmm-a \(its process is gone\); its memory is in region kv-ram0 \(kept\)/,
    );
    // an operator's fence names no one who may run it: no claim
    expect(
      verdictOf(
        evidence({ source: silent, target: answers(null), leases: fenced('vmm-a/kv', 'operator') }),
      ).where,
    ).toBe('unknown');
    expect(lost(answers(null)).detail).toMatch(
      /lost with vmm-a \(its process restarted without it\)/,
    );
    // one that remembers the job but not the VM had it destroyed: no claim of a loss
    const destroyed = verdictOf(
      evidence({ source: answers(null), target: answers(null), leases: [], migration: 'failed' }),
      false,
      job([]),
    );
    expect(destroyed.where).toBe('unknown');
    // private RAM goes with the process
    expect(
      verdictOf(evidence({ source: gone, target: answers(null), leases: [] }), false, job([]))
        .detail,
    ).toBe(
      'VM kv was lost with vmm-a (its process is gone); its RAM was private to that process and is gone',
    );
  });

  it('lost with the target: it took the lease (or the source handed over) and does not have it', () => {
    const v = verdictOf(
      evidence({ source: answers('paused'), target: gone, leases: held('vmm-b/kv') }),
    );
    expect(v).toMatchObject({ status: 'failed', where: 'lost', vmm: 'vmm-b' });
    expect(v.detail).toBe(
      'VM kv was lost with vmm-b (its process is gone), which took its lease; vmm-a keeps a ' +
        'paused copy that can never run again; its memory is in region kv-ram0 (kept)',
    );
    const handed = verdictOf(
      evidence({ source: answers(null), target: gone, leases: undefined, migration: 'completed' }),
    );
    expect(handed).toMatchObject({ where: 'lost', vmm: 'vmm-b' });
  });

  it('never guesses: contradictions and silence are unknown (failed), with what each said', () => {
    const mixed = verdictOf(
      evidence({ source: answers(null), target: answers('running'), leases: held('vmm-a/kv') }),
    );
    expect(mixed).toMatchObject({ status: 'failed', where: 'unknown', vmm: '' });
    expect(mixed.detail).toMatch(/vmm-b has the VM but the lease is not its own/);
    const nothing = verdictOf(evidence({ source: silent, target: silent, leases: undefined }));
    expect(nothing).toMatchObject({ status: 'failed', where: 'unknown' });
    expect(nothing.detail).toMatch(
      /vmm-a does not answer, vmm-b does not answer, memstore could not be asked/,
    );
    // a dead source, but a target that cannot say it does not run it
    expect(verdictOf(evidence({ source: gone, target: silent, leases: undefined })).where).toBe(
      'unknown',
    );
    const holderSilent = verdictOf(
      evidence({ source: answers('paused'), target: silent, leases: held('vmm-b/kv') }),
    );
    expect(holderSilent.detail).toMatch(/vmm-b holds the lease but did not answer/);
    const elsewhere = verdictOf(
      evidence({ source: answers(null), target: answers(null), leases: held('vmm-c/kv') }),
    );
    expect(elsewhere.where).toBe('unknown');
    expect(elsewhere.detail).toMatch(/memstore kv-ram0: vmm-c\/kv/);
  });
});

describe('leftPausedOnSource: a VM the migration left paused that only its source can run', () => {
  const paused = (target: Sighting, leases: readonly RegionLease[] | undefined) => {
    const e = evidence({ source: answers('paused'), target, leases, migration: 'failed' });
    return leftPausedOnSource(job(), judge(job(), e, { cancelled: false }), e);
  };

  it('yes when the target is gone or answers without the VM and the source still leases its memory', () => {
    expect(paused(gone, held('vmm-a/kv', 'alive'))).toBe(true);
    expect(paused(answers(null), held('vmm-a/kv', 'alive'))).toBe(true);
    const e = evidence({
      source: answers('paused'),
      target: gone,
      leases: [],
      migration: 'failed',
    });
    expect(leftPausedOnSource(job([]), judge(job([]), e, { cancelled: false }), e)).toBe(true);
  });

  it('no while the target may still run it, the lease moved or is not known, or the VM is not paused', () => {
    expect(paused(silent, held('vmm-a/kv', 'alive'))).toBe(false);
    expect(paused(answers('paused'), held('vmm-a/kv', 'alive'))).toBe(false);
    expect(paused(gone, held('vmm-b/kv', 'gone'))).toBe(false);
    expect(paused(gone, fenced('vmm-a/kv'))).toBe(false);
    expect(paused(gone, undefined)).toBe(false);
    const e = evidence({
      source: answers('running'),
      target: gone,
      leases: held('vmm-a/kv'),
      migration: 'failed',
    });
    expect(leftPausedOnSource(job(), judge(job(), e, { cancelled: false }), e)).toBe(false);
  });
});

describe('judge: a copy migration', () => {
  const copyJob = (): Job => ({
    ...job(),
    capabilities: resolveCapabilities({ 'bypass-shared-memory': false }),
  });

  it('the target runs the VM in its own memory: completed, whoever holds the source region', () => {
    for (const leases of [fenced('vmm-a/kv'), held('vmm-a/kv', 'alive'), held(null)]) {
      const e = evidence({ source: gone, target: answers('running'), leases });
      expect(judge(copyJob(), e, { cancelled: false }).status).toBe('completed');
    }
  });

  it('with bypass, a target running the VM without its lease is still a contradiction', () => {
    const e = evidence({ source: gone, target: answers('running'), leases: fenced('vmm-a/kv') });
    expect(judge(job(), e, { cancelled: false }).outcome.where).toBe('unknown');
  });

  it("post-copy across hosts: the source region leased to the target host's page source means the target has it", () => {
    const e = evidence({
      source: gone,
      target: answers('running'),
      leases: held('memstore-2/lazy/4f1c'),
    });
    expect(verdictOf(e)).toEqual({
      status: 'completed',
      where: 'target',
      vmm: 'vmm-b',
      detail:
        "VM kv runs on vmm-b (post-copy: its host's memstore took region kv-ram0 from vmm-a's " +
        'at the stop); vmm-a did not answer (its process is gone)',
    });
    // Any other stranger still holding the region is a contradiction.
    const other = evidence({ source: gone, target: answers('running'), leases: held('vmm-z/kv') });
    expect(verdictOf(other).where).toBe('unknown');
  });
});
