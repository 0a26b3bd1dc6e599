import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { createLogger } from '@handoff/service';
import { afterAll, describe, expect, it } from 'vitest';
import type { GuestImage } from '../guests/catalog.js';
import type { MachineState } from '../machine/state.js';
import type { RamBacking } from '../ram/index.js';
import { Ctl, Request } from '../vcpu/protocol.js';
import { MAIN_BLOCK_ID, RAM_WINDOW } from './spec.js';
import { VcpuThreadPool } from '../vcpu/pool.js';
import type { RamBlockSpec, VmSpec } from '../model/types.js';
import { Vm } from './vm.js';

const dir = mkdtempSync(join(tmpdir(), 'handoff-vm-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const FAKE_STATE = { version: 1, fake: true };
const PAUSED_AT = 2000.5;
const RUN_AT = 4000.25;

/**
 * A stand-in vCPU worker speaking the control protocol: it runs on RUN and pauses on PAUSE
 * (as `power-off`, it powers off instead), stamping each change with a fixed time, and answers
 * every new save id (Ctl.SAVE_REQ, read before REQUEST like the real worker) with FAKE_STATE, or
 * an error while running. Incoming, it reports the start before the boot, like the real worker.
 */
function standInWorker(): URL {
  const file = join(dir, 'stand-in.mjs');
  writeFileSync(
    file,
    `import { parentPort, receiveMessageOnPort, workerData } from 'node:worker_threads';
     const init = workerData;
     const ctl = new Int32Array(init.control);
     const post = (m) => parentPort.postMessage(m);
     let seen = Atomics.load(ctl, ${Ctl.DOORBELL});
     let run = 'created';
     if (init.incoming) {
       post({ t: 'spawned' });
       while (receiveMessageOnPort(init.commands) === undefined) {
         Atomics.wait(ctl, ${Ctl.DOORBELL}, seen);
         seen = Atomics.load(ctl, ${Ctl.DOORBELL});
       }
       if (Atomics.load(ctl, ${Ctl.REQUEST}) === ${Request.RUN}) {
         run = 'running';
         post({ t: 'state', state: 'running', instret: 0, at: ${RUN_AT} });
       }
     }
     post({ t: 'booted', entry: 0 });
     let saveSeen = 0;
     for (;;) {
       Atomics.wait(ctl, ${Ctl.DOORBELL}, seen);
       seen = Atomics.load(ctl, ${Ctl.DOORBELL});
       const id = Atomics.load(ctl, ${Ctl.SAVE_REQ});
       const req = Atomics.load(ctl, ${Ctl.REQUEST});
       if (req === ${Request.STOP}) break;
       if (req === ${Request.RUN} && run !== 'running') {
         run = 'running';
         post({ t: 'state', state: 'running', instret: 0, at: 1000 });
       } else if (req === ${Request.PAUSE} && run === 'running') {
         run = init.name === 'power-off' ? 'powered-off' : 'paused';
         post({ t: 'state', state: run, instret: 0, at: ${PAUSED_AT}, exitCode: 0, latencyMs: 0.1 });
       }
       if (id !== saveSeen) {
         saveSeen = id;
         post(run === 'running'
           ? { t: 'saved', id, state: null, error: 'the VM is running; pause it first' }
           : { t: 'saved', id, state: ${JSON.stringify(FAKE_STATE)} });
       }
     }
     post({ t: 'stopped' });
     init.commands.close();`,
  );
  return pathToFileURL(file);
}

const threads = new VcpuThreadPool(standInWorker(), 0);
const logger = createLogger({ name: 'vm-test', level: 'silent', format: 'json' });

function standInRam(name: string): { spec: VmSpec; ram: RamBacking } {
  const main: RamBlockSpec = {
    id: MAIN_BLOCK_ID,
    guestBase: RAM_WINDOW.base,
    size: 1 << 20,
    backend: 'private',
    region: '',
  };
  const spec: VmSpec = { name, guest: 'stand-in', ram: [main], args: {} };
  const ram: RamBacking = {
    spec: main,
    buffer: new SharedArrayBuffer(main.size),
    regionRef: null,
    zeroed: true,
    close: () => Promise.resolve(),
    abandon: () => undefined,
  };
  return { spec, ram };
}

async function bootStandIn(name: string): Promise<Vm> {
  const { spec, ram } = standInRam(name);
  const guest = { name: 'stand-in', bytes: new Uint8Array(0) } as unknown as GuestImage;
  const vm = await Vm.boot(spec, [ram], guest, { vmmId: 'vmm-test', logger, threads });
  await vm.start();
  return vm;
}

describe('Vm.pauseAndSave', () => {
  it('pauses and saves in one request, calling onPaused with the stop stamp', async () => {
    const vm = await bootStandIn('pause');
    const calls: number[] = [];
    const saved = await vm.pauseAndSave((at) => calls.push(at));
    expect(calls).toEqual([PAUSED_AT]);
    expect(saved).toEqual({ published: false, pausedAtMs: PAUSED_AT, state: FAKE_STATE });
    expect(vm.currentState).toBe('paused');

    // Already paused: saved only.
    const again = await vm.pauseAndSave((at) => calls.push(at));
    expect(again).toMatchObject({ published: false, state: FAKE_STATE });
    expect(calls).toHaveLength(2);
    expect(vm.currentState).toBe('paused');
    await vm.destroy();
  });

  it('fails without calling onPaused when the vCPU stops for another reason', async () => {
    const vm = await bootStandIn('power-off');
    let called = false;
    await expect(
      vm.pauseAndSave(() => {
        called = true;
      }),
    ).rejects.toMatchObject({ code: 'VMM_INVALID_STATE' });
    expect(called).toBe(false);
    expect(vm.currentState).toBe('powered-off');
    await vm.destroy();
  });
});

describe('Vm.runIncoming', () => {
  it('resolves with the run stamp when the start is reported before the boot', async () => {
    const { spec, ram } = standInRam('incoming');
    const vm = Vm.spawnIncoming(spec, [ram], true, { vmmId: 'vmm-test', logger, threads });
    await vm.spawned();
    const at = await vm.runIncoming(FAKE_STATE as unknown as MachineState);
    expect(at).toBe(RUN_AT);
    expect(vm.currentState).toBe('running');
    await vm.destroy();
  });
});
