import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { repoRoot } from './helpers/services.js';
import { vmctlRunner } from './helpers/vmctl.js';

/**
 * `npm start` keeps the cluster up: a service killed with -9 is started again on its port and a
 * vmm registers with the migrator again, while the others run on untouched; Ctrl-C still stops
 * everything, and no service outlives the launcher, even one it restarted.
 */

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** `npm start` on free ports, in fresh state folders; its output collected. */
class Launched {
  readonly stateDir = mkdtempSync(join(tmpdir(), 'handoff-supervise-'));
  readonly volatileDir = mkdtempSync('/dev/shm/handoff-supervise-test-');
  readonly child: ChildProcess;
  readonly exited: Promise<number | null>;
  out = '';

  constructor() {
    this.child = spawn(
      process.execPath,
      [
        join(repoRoot, 'tools/cluster/dist/main.js'),
        '--base-port',
        '0',
        '--state-dir',
        this.stateDir,
        '--volatile-dir',
        this.volatileDir,
        '--log-format',
        'json',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    this.child.stdout!.setEncoding('utf8').on('data', (d: string) => (this.out += d));
    this.child.stderr!.setEncoding('utf8').on('data', (d: string) => (this.out += d));
    this.exited = new Promise((r) => this.child.once('exit', (code) => r(code)));
  }

  /** Resolves once `text` was printed; fails with the output after `timeoutMs`. */
  async printed(text: string | RegExp, timeoutMs = 30_000): Promise<void> {
    const seen = () => (typeof text === 'string' ? this.out.includes(text) : text.test(this.out));
    for (let t = 0; t < timeoutMs && !seen(); t += 50) await new Promise((r) => setTimeout(r, 50));
    expect(seen(), `never printed ${String(text)}; printed:\n${this.out.slice(-4000)}`).toBe(true);
  }

  /** The address the launcher printed for `service`. */
  address(service: string): string {
    const m = new RegExp(`^  ${service} +(\\S+)$`, 'm').exec(this.out);
    if (m === null) throw new Error(`no address of ${service} printed`);
    return m[1]!;
  }

  /** The pid in `service`'s ready file (the process serving now). */
  pid(service: string): number {
    const ready = JSON.parse(
      readFileSync(join(this.stateDir, 'run', `${service}.ready.json`), 'utf8'),
    ) as { pid: number };
    return ready.pid;
  }

  async cleanup(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      this.child.kill('SIGKILL');
      await this.exited;
    }
    rmSync(this.stateDir, { recursive: true, force: true });
    rmSync(this.volatileDir, { recursive: true, force: true });
  }
}

const SERVICES = ['memstore', 'migrator', 'vmm-a', 'vmm-b'];

describe('npm start supervises its services', () => {
  let launched: Launched | undefined;
  afterEach(async () => {
    await launched?.cleanup();
    launched = undefined;
  });

  it('restarts a vmm killed with -9, which registers again; the others keep running; Ctrl-C stops all', async () => {
    const l = (launched = new Launched());
    await l.printed('Handoff local cluster is up');
    const env = {
      ...process.env,
      HANDOFF_MEMSTORE_ADDR: l.address('memstore'),
      HANDOFF_MIGRATOR_ADDR: l.address('migrator'),
      HANDOFF_TLS_DIR: join(l.stateDir, 'tls'), // the PKI the launcher created
    };
    const { run, json } = vmctlRunner(() => env);
    type Status = { vmms: { id: string; address: string; vms: number; alive: boolean }[] };
    const vmmB = async () => (await json<Status>('status')).vmms.find((v) => v.id === 'vmm-b');
    const waitForVmmB = async (what: string, ok: (v: Status['vmms'][number]) => boolean) => {
      let last: Status['vmms'][number] | undefined;
      for (let i = 0; i < 150; i++) {
        last = await vmmB();
        if (last !== undefined && ok(last)) return last;
        await new Promise((r) => setTimeout(r, 100));
      }
      throw new Error(`vmm-b never ${what}; the migrator last listed ${JSON.stringify(last)}`);
    };
    await waitForVmmB('registered', (v) => v.alive);
    // A VM on each: vmm-a's stays, vmm-b's goes with its process (VMs do not survive their vmm).
    const created = await run(
      'vm',
      'create',
      'held',
      '--guest',
      'hello',
      '--memory',
      '16M',
      '--vmm',
      'vmm-a',
    );
    expect(created.code, created.stderr).toBe(0);
    const onB = await run(
      'vm',
      'create',
      'on-b',
      '--guest',
      'hello',
      '--memory',
      '16M',
      '--vmm',
      'vmm-b',
      '--no-start',
    );
    expect(onB.code, onB.stderr).toBe(0);
    await waitForVmmB('reported its VM', (v) => v.vms >= 1);
    const before = Object.fromEntries(SERVICES.map((s) => [s, l.pid(s)]));
    const addressB = l.address('vmm-b');

    process.kill(before['vmm-b']!, 'SIGKILL');
    await l.printed('launcher: vmm-b exited unexpectedly (signal SIGKILL); restart 1 in 0.5 s');
    await l.printed(/launcher: vmm-b is back \(restart 1, pid \d+, 127\.0\.0\.1:\d+\)/);
    const after = Object.fromEntries(SERVICES.map((s) => [s, l.pid(s)]));
    expect(after['vmm-b']).not.toBe(before['vmm-b']);
    expect(isAlive(before['vmm-b']!)).toBe(false);
    for (const s of ['memstore', 'migrator', 'vmm-a']) {
      expect({ s, pid: after[s] }).toEqual({ s, pid: before[s] });
      expect(isAlive(after[s]!)).toBe(true);
    }
    expect(l.out).toContain(`vmm-b is back (restart 1, pid ${after['vmm-b']}, ${addressB})`);

    // The new process registered again: same address, and the (empty) VM set it has now.
    const back = await waitForVmmB('registered again', (v) => v.alive && v.vms === 0);
    expect(back.address).toBe(addressB);
    const list = await json<{ vms: { name: string; vmm: string }[] }>('vm', 'list');
    expect(list.vms.map((v) => v.name)).not.toContain('on-b');
    expect(list.vms.find((v) => v.name === 'held')?.vmm).toBe('vmm-a'); // untouched
    // The cluster works on: a VM lands on the restarted instance.
    const again = await run('vm', 'create', 'again', '--guest', 'hello', '--vmm', 'vmm-b');
    expect(again.code, again.stderr).toBe(0);

    l.child.kill('SIGINT');
    expect(await l.exited).toBe(0);
    expect(l.out).toContain('cluster stopped.');
    for (const s of SERVICES) expect({ s, alive: isAlive(after[s]!) }).toEqual({ s, alive: false });
  });

  it('leaves no service behind when the launcher itself is killed with -9', async () => {
    const l = (launched = new Launched());
    await l.printed('Handoff local cluster is up');
    const pids = SERVICES.map((s) => l.pid(s));
    l.child.kill('SIGKILL');
    await l.exited;
    // Each service stops once its standard input (a pipe from the launcher) closes.
    for (let i = 0; i < 200 && pids.some(isAlive); i++) {
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(pids.filter(isAlive)).toEqual([]);
  });
});
