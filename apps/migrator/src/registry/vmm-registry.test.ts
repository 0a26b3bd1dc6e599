import { describe, expect, it } from 'vitest';
import { MigratorError } from '../errors.js';
import type { HostedVm, HostedVms, VmState } from './hosted-vm.js';
import { VmmRegistry } from './vmm-registry.js';

const vm = (name: string, state: VmState = 'running'): HostedVm => ({
  name,
  state,
  spec: { name, guest: 'ab', ram: [], args: {} },
});
const set = (version: number, ...vms: HostedVm[]): HostedVms => ({ version, vms });
const beat = (id: string, vmsVersion: number, vms?: HostedVms) => ({
  id,
  address: `${id}:1`,
  version: '1',
  vmCount: vms?.vms.length ?? 0,
  vmsVersion,
  vms,
});

describe('VmmRegistry', () => {
  it("keeps each instance's host and memstore; one that names no host is on host-1", () => {
    const r = new VmmRegistry(500);
    r.register({ ...beat('vmm-a', 0), hostId: 'host-1', memstoreAddress: 'm1:7100' });
    r.register({ ...beat('vmm-c', 0), hostId: 'host-2', memstoreAddress: 'm2:7300' });
    r.register(beat('vmm-old', 0));
    expect(r.list().map((v) => [v.id, v.hostId, v.memstoreAddress])).toEqual([
      ['vmm-a', 'host-1', 'm1:7100'],
      ['vmm-c', 'host-2', 'm2:7300'],
      ['vmm-old', 'host-1', ''],
    ]);
    // a heartbeat carries them again: a restarted instance may have moved to another host
    r.register({ ...beat('vmm-c', 0), hostId: 'host-3', memstoreAddress: 'm3:7400' });
    expect(r.get('vmm-c')).toMatchObject({ hostId: 'host-3', memstoreAddress: 'm3:7400' });
  });

  it("places a new VM on the migrator's memstore's host, else on any alive instance", () => {
    let now = 1000;
    const r = new VmmRegistry(500, () => now, 'm1:7100');
    r.register({ ...beat('vmm-a', 1, set(1, vm('x'), vm('y'))), memstoreAddress: 'm1:7100' });
    r.register({ ...beat('vmm-c', 1, set(1)), hostId: 'host-2', memstoreAddress: 'm2:7300' });
    // vmm-c holds fewer VMs, but its memstore has none of the migrator's snapshots
    expect(r.place().id).toBe('vmm-a');
    expect(r.place('vmm-c').id).toBe('vmm-c');
    now += 400;
    r.register({ ...beat('vmm-c', 1), hostId: 'host-2', memstoreAddress: 'm2:7300' });
    now += 200; // vmm-a expired
    expect(r.place().id).toBe('vmm-c');
    // without a memstore of its own, the fewest VMs anywhere
    const plain = new VmmRegistry(500);
    plain.register({ ...beat('vmm-a', 1, set(1, vm('x'))), memstoreAddress: 'm1:7100' });
    plain.register({ ...beat('vmm-c', 1, set(1)), memstoreAddress: 'm2:7300' });
    expect(plain.place().id).toBe('vmm-c');
  });

  it('refuses a host id that is not lower-case letters, digits and dashes', () => {
    const r = new VmmRegistry(500);
    for (const hostId of ['Host-2', '../h', 'h_2']) {
      expect(() => r.register({ ...beat('vmm-a', 0), hostId })).toThrow(/is not a host id/);
    }
    expect(r.list()).toEqual([]);
  });

  it('lists registered instances sorted, alive until the expiry passes', () => {
    let now = 1000;
    const r = new VmmRegistry(500, () => now);
    expect(r.register(beat('vmm-b', 0)).isNew).toBe(true);
    expect(r.register(beat('vmm-a', 0)).isNew).toBe(true);
    expect(r.list().map((v) => [v.id, v.alive])).toEqual([
      ['vmm-a', true],
      ['vmm-b', true],
    ]);
    now = 1400;
    expect(r.register({ ...beat('vmm-a', 0), address: 'a:2' }).isNew).toBe(false);
    now = 1600;
    expect(r.list().map((v) => [v.id, v.alive, v.address])).toEqual([
      ['vmm-a', true, 'a:2'],
      ['vmm-b', false, 'vmm-b:1'],
    ]);
  });

  it('rejects bad ids, unknown lookups and reports of unregistered instances with what to do', () => {
    const r = new VmmRegistry(500);
    expect(() => r.register(beat('../x', 0))).toThrow(MigratorError);
    expect(() => r.register({ ...beat('ok', 0), address: '' })).toThrow(/without an address/);
    expect(() => r.get('vmm-z')).toThrow(/no vmm instance "vmm-z" is registered \(known: none\)/);
    expect(() => r.reportVms('vmm-z', set(1))).toThrow(/call RegisterVmm first/);
  });

  it('places VMs by the registration and the reports; a heartbeat asks for a version it lacks', () => {
    const r = new VmmRegistry(60_000);
    expect(r.register(beat('vmm-a', 1, set(1, vm('vm1')))).vmsWanted).toBe(false);
    expect(r.locate('vm1')?.vmm.id).toBe('vmm-a');
    expect(r.locate('vm1')?.vm.spec?.guest).toBe('ab');
    // a heartbeat of the same version is all it takes
    expect(r.register(beat('vmm-a', 1)).vmsWanted).toBe(false);
    // the set changed and its report was lost: the next heartbeat says so
    expect(r.register(beat('vmm-a', 2)).vmsWanted).toBe(true);
    r.reportVms('vmm-a', set(2, vm('vm1'), vm('vm2')));
    expect(r.register(beat('vmm-a', 2)).vmsWanted).toBe(false);
    expect(r.vmsOn('vmm-a')?.map((v) => v.name)).toEqual(['vm1', 'vm2']);
    // an instance that never reported its set is asked for it
    expect(r.register(beat('vmm-b', 1)).vmsWanted).toBe(true);
    expect(r.vmsOn('vmm-b')).toBeUndefined();
    expect(r.locate('nope')).toBeUndefined();
  });

  it('places a VM two instances list where it arrived last; a late report changes nothing', () => {
    const r = new VmmRegistry(60_000);
    r.register(beat('vmm-a', 1, set(1, vm('vm1'), vm('vm2'))));
    r.register(beat('vmm-b', 1, set(1)));
    // vm1 arrived on vmm-b; vmm-a's report that drops it is not in yet
    r.reportVms('vmm-b', set(2, vm('vm1')));
    expect(r.locate('vm1')?.vmm.id).toBe('vmm-b');
    expect(r.vmsOn('vmm-a')?.map((v) => v.name)).toEqual(['vm2']);
    // a report of vmm-a that still lists vm1 as running does not make it new there
    r.reportVms('vmm-a', set(2, vm('vm1'), vm('vm2'), vm('vm3')));
    expect(r.locate('vm1')?.vmm.id).toBe('vmm-b');
    // a postmigrate copy is never where a VM runs
    r.reportVms('vmm-b', set(3, vm('vm3', 'postmigrate')));
    expect(r.locate('vm3')?.vmm.id).toBe('vmm-a');
  });

  it('moves a VM with the job that moved it, before either report arrives', () => {
    const r = new VmmRegistry(60_000);
    r.register(beat('vmm-a', 1, set(1, vm('vm1', 'paused'))));
    r.register(beat('vmm-b', 1, set(1)));
    r.moved('vm1', 'vmm-a', 'vmm-b');
    const at = r.locate('vm1');
    expect(at?.vmm.id).toBe('vmm-b');
    expect(at?.vm).toMatchObject({ state: 'paused', spec: { name: 'vm1' } });
    expect(r.vmsOn('vmm-a')).toEqual([]);
    // the target's report of its arrival, then the source's after the retirement
    r.reportVms('vmm-b', set(2, vm('vm1')));
    r.reportVms('vmm-a', set(2));
    expect(r.locate('vm1')?.vmm.id).toBe('vmm-b');
    // and straight back
    r.moved('vm1', 'vmm-b', 'vmm-a');
    expect(r.locate('vm1')?.vmm.id).toBe('vmm-a');
  });

  it('places no VM of an instance that stopped heartbeating, until it reports again', () => {
    let now = 0;
    const r = new VmmRegistry(500, () => now);
    r.register(beat('vmm-a', 4, set(4, vm('vm1'))));
    now = 600;
    expect(r.locate('vm1')).toBeUndefined();
    expect(r.vmsOn('vmm-a')).toBeUndefined();
    // back, with the same version: what it said before the silence is not trusted
    expect(r.register(beat('vmm-a', 4)).vmsWanted).toBe(true);
    expect(r.locate('vm1')).toBeUndefined();
    r.reportVms('vmm-a', set(4, vm('vm1')));
    expect(r.locate('vm1')?.vmm.id).toBe('vmm-a');
  });

  it('learns one VM outside the reports (a lookup), as its newest place', () => {
    const r = new VmmRegistry(60_000);
    r.register(beat('vmm-a', 1, set(1, vm('vm1'))));
    r.register(beat('vmm-b', 1));
    r.learned('vmm-b', vm('vm1'));
    expect(r.locate('vm1')?.vmm.id).toBe('vmm-b');
    // a partial set is not a report: the heartbeat still asks for the whole set
    expect(r.register(beat('vmm-b', 1)).vmsWanted).toBe(true);
    expect(r.vmsOn('vmm-b')).toBeUndefined();
  });
  it('places a new VM on the named instance, else on the alive one with the fewest VMs', () => {
    let now = 1000;
    const r = new VmmRegistry(500, () => now);
    r.register(beat('vmm-a', 1, set(1, vm('x'), vm('y'))));
    r.register(beat('vmm-b', 1, set(1, vm('z'), vm('gone', 'postmigrate'))));
    // no report yet: its heartbeat's count stands in
    r.register({ ...beat('vmm-c', 3), vmCount: 3 });
    expect(r.place().id).toBe('vmm-b'); // its postmigrate copy does not count
    expect(r.place('vmm-a').id).toBe('vmm-a');
    r.register(beat('vmm-a', 2, set(2)));
    expect(r.place().id).toBe('vmm-a');
    expect(() => r.place('vmm-z')).toThrow(/no vmm instance "vmm-z" is registered/);
    now = 1400;
    r.register(beat('vmm-b', 1));
    now = 1700; // vmm-a and vmm-c expired
    expect(r.place().id).toBe('vmm-b');
    expect(() => r.place('vmm-a')).toThrow(
      expect.objectContaining({ code: 'MIGRATOR_VMM_UNAVAILABLE' }) as Error,
    );
    now = 5000;
    expect(() => r.place()).toThrow(/no vmm instance is alive to run the VM/);
    expect([...r.vmNames()].sort()).toEqual(['gone', 'z']);
  });
});
