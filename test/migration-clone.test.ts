import { memstore as mspb, vmm as pb } from '@handoff/proto';
import { unaryCall } from '@handoff/service';
import { mapFile } from '@handoff/shm';
import { checkAbConsistency } from '@handoff/vmm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  memstoreDirs,
  regionNamed,
  startMemstoreProcess,
  type MemstoreDirs,
  type MemstoreUnderTest,
} from './helpers/memstore.js';
import {
  AB_BASE,
  AB_PAGES,
  abArgs,
  expectRetired,
  headerFor,
  migrateVm,
  rawIncoming,
} from './helpers/migration.js';
import { mappingsOf, readThroughMapping } from './helpers/proc-mem.js';
import { openConsole, startVmmProcess, vmmCall, vmSpec, type VmmUnderTest } from './helpers/vmm.js';

const MiB = 1024 * 1024;
const SIZE = 16 * MiB;
/** Pages 1024..2047 (4..8 MiB) of the template hold a pattern the guest never writes. */
const PATTERN_FIRST = 1024;
const PATTERN_PAGES = 1024;
const TEMPLATE = 'tpl-ab';

function fillPattern(buf: ArrayBufferLike): void {
  for (let p = PATTERN_FIRST; p < PATTERN_FIRST + PATTERN_PAGES; p++) {
    new Uint32Array(buf, p * 4096, 1024).fill((0xc10e0000 | p) >>> 0);
  }
}

function patternIntact(bytes: Uint8Array): boolean {
  const words = new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
  for (let i = 0; i < words.length; i++) {
    if (words[i] !== (0xc10e0000 | (PATTERN_FIRST + (i >> 10))) >>> 0) return false;
  }
  return true;
}

/**
 * A VM whose main RAM is a `clone` of a sealed memstore template migrates with
 * bypass-shared-memory as a TemplateRef plus the pages the clone wrote; the target maps the very
 * same template copy-on-write. Real memstore and vmm processes on loopback.
 */
describe('clone RAM migrates by TemplateRef with bypass', () => {
  let dirs: MemstoreDirs;
  let memstore: MemstoreUnderTest;
  let a: VmmUnderTest;
  let b: VmmUnderTest;
  let template: mspb.Region;

  const startVmm = (id: string) =>
    startVmmProcess(['--id', id, '--memstore', memstore.process.address]);
  const getTemplate = async () =>
    (await unaryCall(memstore.client, 'getRegion', { region: regionNamed(TEMPLATE) })).region!;

  beforeAll(async () => {
    dirs = memstoreDirs();
    memstore = await startMemstoreProcess(dirs);
    [a, b] = await Promise.all([startVmm('vmm-a'), startVmm('vmm-b')]);
    // The template: 16 MiB, a known pattern at 4..8 MiB, zero elsewhere; then sealed.
    await unaryCall(memstore.client, 'createRegion', {
      name: TEMPLATE,
      size: BigInt(SIZE),
      kind: mspb.RegionKind.REGION_KIND_VOLATILE,
    });
    const { lease } = await unaryCall(memstore.client, 'acquireLease', {
      region: regionNamed(TEMPLATE),
      holder: 'test-vmm/template', // the test client's own holder (it is vmm test-vmm)
    });
    const m = mapFile((await getTemplate()).path, { sharing: 'shared' });
    try {
      fillPattern(m.buffer);
    } finally {
      m.close();
    }
    await unaryCall(memstore.client, 'sealTemplate', {
      region: regionNamed(TEMPLATE),
      holder: 'test-vmm/template',
      epoch: lease!.epoch,
    });
    template = await getTemplate();
    expect(template.state).toBe(mspb.RegionState.REGION_STATE_SEALED);
  });

  afterAll(async () => {
    await Promise.all([a?.stop(), b?.stop()]);
    await memstore?.stop();
    dirs?.cleanup();
  });

  async function startClone(on: VmmUnderTest, name: string): Promise<pb.Vm> {
    await vmmCall(on.client, 'createVm', {
      spec: vmSpec(name, 'ab', {
        backend: pb.RamBackend.RAM_BACKEND_CLONE,
        region: TEMPLATE,
        args: abArgs,
      }),
      start: true,
    });
    const console = openConsole(on.client, name);
    await console.waitFor('BB');
    console.close();
    return (await vmmCall(on.client, 'getVm', { name })).vm!;
  }

  /**
   * On `on`, paused: ab's range is consistent and the template's pattern shows through the
   * clone's mapping (the pages the clone never wrote are the template's); then resumed, and
   * the guest makes progress.
   */
  async function checkClone(on: VmmUnderTest, name: string): Promise<void> {
    await vmmCall(on.client, 'pauseVm', { name });
    const pid = on.process.pid;
    const r = checkAbConsistency(readThroughMapping(pid, template.path, AB_BASE, AB_PAGES * 4096));
    expect(r.consistent, r.description).toBe(true);
    expect(
      patternIntact(
        readThroughMapping(pid, template.path, PATTERN_FIRST * 4096, PATTERN_PAGES * 4096),
      ),
    ).toBe(true);
    const before = (await vmmCall(on.client, 'getVm', { name })).vm!.instret;
    await vmmCall(on.client, 'resumeVm', { name });
    for (let i = 0; ; i++) {
      const vm = (await vmmCall(on.client, 'getVm', { name })).vm!;
      expect(vm.state).toBe(pb.VmState.VM_STATE_RUNNING);
      if (vm.instret > before) break;
      if (i > 200) throw new Error(`${name} does not run after the migration`);
      await new Promise((res) => setTimeout(res, 10));
    }
  }

  /** The template file itself never changes (clones write their private copies). */
  function expectTemplatePristine(): void {
    const m = mapFile(template.path, { sharing: 'private' });
    try {
      const bytes = new Uint8Array(m.buffer);
      expect(bytes.subarray(0, PATTERN_FIRST * 4096).every((x) => x === 0)).toBe(true);
      expect(
        patternIntact(bytes.subarray(PATTERN_FIRST * 4096, (PATTERN_FIRST + PATTERN_PAGES) * 4096)),
      ).toBe(true);
    } finally {
      m.close();
    }
  }

  it('sends the TemplateRef and only the pages the clone wrote, there and back', async () => {
    const name = 'clone-ab';
    const created = await startClone(a, name);
    expect(created.ram[0]!.regionRef!.identity).toBe(template.identity);
    let [from, to] = [a, b];
    for (const round of [1, 2]) {
      const touched = Number(
        (await vmmCall(from.client, 'getVm', { name })).vm!.ram[0]!.touchedPages,
      );
      expect(touched).toBeGreaterThanOrEqual(AB_PAGES);
      expect(touched).toBeLessThan(SIZE / 4096 / 8);
      const info = await migrateVm(from, to, name, {
        capabilities: { 'bypass-shared-memory': true },
      });
      expect(info.status).toBe('completed');
      // (b) RAM on the wire: the clone's own pages (ab's range, image, stack), not 16 MiB; the
      // pattern the template holds is never sent.
      const dst = (await vmmCall(to.client, 'getVm', { name })).vm!;
      const touchedThere = Number(dst.ram[0]!.touchedPages);
      // Each touched page once in the bulk pass, plus the ones ab rewrote meanwhile (its range)
      // once more in the final pass.
      const sendable = touchedThere + AB_PAGES + 16;
      expect(info.ram.transferred).toBeGreaterThanOrEqual(AB_PAGES * 4096);
      expect(info.ram.normal + info.ram.duplicate).toBeLessThanOrEqual(sendable);
      expect(info.ram.transferred).toBeLessThanOrEqual(sendable * 4096 + 64 * 1024);
      expect(info.ram.transferred).toBeLessThan(SIZE / 8);
      console.log(
        `clone round ${round}: ${info.ram.transferred} B of ${SIZE} sent (${info.ram.normal} normal, ` +
          `${info.ram.duplicate} duplicate pages; ${touched} touched), total ${info.totalTimeMs} ms, ` +
          `downtime ${info.downtimeUs} µs`,
      );
      // (c) the target's clone maps the very same sealed template, copy-on-write.
      expect(dst.state).toBe(pb.VmState.VM_STATE_RUNNING);
      expect(dst.ram[0]!.spec!.backend).toBe(pb.RamBackend.RAM_BACKEND_CLONE);
      expect(dst.ram[0]!.regionRef!.identity).toBe(template.identity);
      expect(dst.ram[0]!.regionRef!.regionId).toBe(template.id);
      expect(mappingsOf(to.process.pid, template.path).length).toBeGreaterThan(0);
      // (a) the guest's memory is intact on the target, template pages included.
      await checkClone(to, name);
      // The source retired its husk: it unmapped the template and only the target is attached.
      await expectRetired(from, name);
      expect(mappingsOf(from.process.pid, template.path)).toEqual([]);
      const t = await getTemplate();
      expect(t.cloneCount).toBe(1);
      expect(t.mappedBy).toEqual([`${to === a ? 'vmm-a' : 'vmm-b'}/${name}`]);
      expectTemplatePristine();
      [from, to] = [to, from];
    }
    // Without bypass the same VM's RAM travels whole (the pattern included): far more bytes.
    const copied = await migrateVm(from, to, name, {
      capabilities: { 'bypass-shared-memory': false },
    });
    expect(copied.status).toBe('completed');
    expect(copied.ram.transferred).toBeGreaterThan(PATTERN_PAGES * 4096);
    await expectRetired(from, name);
    await vmmCall(to.client, 'destroyVm', { name });
    expect((await getTemplate()).cloneCount).toBe(0);
  });

  it('(d) refuses a TemplateRef whose identity is not the template’s; the source runs on', async () => {
    const name = 'clone-hostile';
    const vm = await startClone(a, name);
    const ref = vm.ram[0]!.regionRef!;
    const block = (identity: string) => ({
      index: 0,
      id: 'ram0',
      guestBase: 0x8000_0000n,
      size: BigInt(SIZE),
      backend: pb.RamBackend.RAM_BACKEND_CLONE,
      regionRef: undefined,
      templateRef: { templateId: ref.regionId, size: BigInt(SIZE), identity, memstore: '' },
    });
    for (const identity of ['someone-else', '']) {
      const { token } = await vmmCall(b.client, 'prepareIncoming', {
        name,
        jobId: 'hostile',
        spec: undefined,
        capabilities: [],
        sourceVmm: 'vmm-x', // rawIncoming's certificate
      });
      const s = rawIncoming(b.process.address);
      s.send(headerFor(token, vm.spec!, [block(identity)], { source: 'vmm-a' }));
      const out = await s.outcome();
      s.close();
      expect(out.acked).toBe(false);
      expect(out.error?.code).toBe('MIGRATION_REGION_MISMATCH');
    }
    // The refused arrivals left nothing behind: not attached, not mapped, not listed.
    for (let i = 0; i < 100 && (await getTemplate()).cloneCount !== 1; i++) {
      await new Promise((res) => setTimeout(res, 20));
    }
    expect((await getTemplate()).mappedBy).toEqual([`vmm-a/${name}`]);
    expect(mappingsOf(b.process.pid, template.path)).toEqual([]);
    expect((await vmmCall(b.client, 'listVms', {})).vms.map((v) => v.name)).not.toContain(name);
    expect((await vmmCall(a.client, 'getVm', { name })).vm!.state).toBe(
      pb.VmState.VM_STATE_RUNNING,
    );
    // The right identity goes through.
    const info = await migrateVm(a, b, name, { capabilities: { 'bypass-shared-memory': true } });
    expect(info.status).toBe('completed');
    await checkClone(b, name);
    await expectRetired(a, name);
    await vmmCall(b.client, 'destroyVm', { name });
  });
});
