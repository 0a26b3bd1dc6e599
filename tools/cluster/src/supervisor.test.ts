import { EventEmitter } from 'node:events';
import type { ChildProcess } from 'node:child_process';
import type { ServiceProcess } from '@handoff/service';
import { describe, expect, it } from 'vitest';
import type { RestartPolicy } from './restart-policy.js';
import { SupervisedService, type SupervisionEvent } from './supervisor.js';

const fast: RestartPolicy = {
  initialDelayMs: 10,
  maxDelayMs: 40,
  stableAfterMs: 60_000,
  maxCrashes: 4,
  windowMs: 60_000,
};

/** A stand-in process: `die()` is a crash, `stop()` a clean exit. */
interface FakeProcess extends ServiceProcess {
  die(signal?: NodeJS.Signals): void;
  readonly stopped: boolean;
}

let pids = 100;
function fakeProcess(address: string): FakeProcess {
  const child = new EventEmitter() as unknown as ChildProcess;
  let stopped = false;
  let gone = false;
  const exit = (code: number | null, signal: NodeJS.Signals | null) => {
    if (gone) return;
    gone = true;
    child.emit('exit', code, signal);
  };
  return {
    name: 'svc',
    address,
    metricsAddress: null,
    pid: pids++,
    child,
    exited: Promise.resolve(0),
    output: () => '',
    stop: async () => {
      stopped = true;
      exit(0, null);
      return 0;
    },
    kill9: async () => exit(null, 'SIGKILL'),
    die: (signal = 'SIGKILL') => exit(null, signal),
    get stopped() {
      return stopped;
    },
  };
}

/** A supervised stand-in whose starts follow `script` (a process, or an error to throw). */
function supervised(script: ('ok' | 'fail' | 'hang')[], policy: RestartPolicy | null = fast) {
  const events: SupervisionEvent[] = [];
  const starts: { address: string | null; signal: AbortSignal }[] = [];
  const procs: FakeProcess[] = [];
  const svc = new SupervisedService(
    'vmm-b',
    async (signal, address) => {
      starts.push({ address, signal });
      const step = script.shift() ?? 'ok';
      if (step === 'fail') throw new Error('vmm-b exited during start-up:\nits log');
      if (step === 'hang') {
        await new Promise((_, reject) =>
          signal.addEventListener('abort', () => reject(new Error('aborted'))),
        );
      }
      const p = fakeProcess('127.0.0.1:7202');
      procs.push(p);
      return p;
    },
    policy,
    (e) => events.push(e),
  );
  return { svc, events, starts, procs };
}

const until = async (what: () => boolean): Promise<void> => {
  for (let i = 0; i < 200 && !what(); i++) await new Promise((r) => setTimeout(r, 5));
  expect(what()).toBe(true);
};

describe('a supervised service', () => {
  it('restarts a process that died on the port it had, and says so', async () => {
    const { svc, events, starts, procs } = supervised(['ok', 'ok']);
    await svc.begin();
    procs[0]!.die();
    expect(svc.current).toBeNull();
    await until(() => svc.current !== null);
    expect(svc.current).toBe(procs[1]);
    expect(starts.map((s) => s.address)).toEqual([null, '127.0.0.1:7202']);
    expect(events).toEqual([
      {
        kind: 'exited',
        service: 'vmm-b',
        code: null,
        signal: 'SIGKILL',
        restart: 1,
        delayMs: 10,
      },
      {
        kind: 'restarted',
        service: 'vmm-b',
        restart: 1,
        pid: procs[1]!.pid,
        address: '127.0.0.1:7202',
      },
    ]);
    await svc.stop(1000);
    expect(procs[1]!.stopped).toBe(true);
  });

  it('backs off after failed restarts and gives up after too many deaths', async () => {
    const { svc, events } = supervised(['ok', 'fail', 'fail', 'fail']);
    const first = await svc.begin();
    (first as FakeProcess).die('SIGSEGV');
    await until(() => events.some((e) => e.kind === 'gave-up'));
    expect(
      events.map((e) =>
        e.kind === 'exited'
          ? `exited ${e.signal} -> ${e.restart} in ${e.delayMs}`
          : e.kind === 'restart-failed'
            ? `failed ${e.restart} -> ${e.next} in ${e.delayMs}`
            : `${e.kind}`,
      ),
    ).toEqual([
      'exited SIGSEGV -> 1 in 10',
      'failed 1 -> 2 in 20',
      'failed 2 -> 3 in 40',
      'failed 3 -> null in 0',
      'gave-up',
    ]);
    expect(events.at(-1)).toEqual({
      kind: 'gave-up',
      service: 'vmm-b',
      crashes: 4,
      windowMs: 60_000,
    });
    expect(svc.current).toBeNull();
    await svc.stop(1000);
  });

  it('is not restarted once stopping, even with a restart pending or in progress', async () => {
    const pending = supervised(['ok', 'ok'], { ...fast, initialDelayMs: 200 });
    await pending.svc.begin();
    pending.procs[0]!.die();
    await pending.svc.stop(1000);
    await new Promise((r) => setTimeout(r, 300));
    expect(pending.starts).toHaveLength(1);

    const starting = supervised(['ok', 'hang']);
    await starting.svc.begin();
    starting.procs[0]!.die();
    await until(() => starting.starts.length === 2);
    await starting.svc.stop(1000);
    expect(starting.starts[1]!.signal.aborted).toBe(true);
    expect(starting.events.map((e) => e.kind)).toEqual(['exited']);
  });

  it('stays down without a policy, and reports the death', async () => {
    const { svc, events, procs } = supervised(['ok'], null);
    await svc.begin();
    procs[0]!.die();
    await new Promise((r) => setTimeout(r, 30));
    expect(events).toEqual([
      {
        kind: 'exited',
        service: 'vmm-b',
        code: null,
        signal: 'SIGKILL',
        restart: null,
        delayMs: 0,
      },
    ]);
    expect(svc.current).toBeNull();
  });

  it('does not report its own stop as a death', async () => {
    const { svc, events, procs } = supervised(['ok']);
    await svc.begin();
    await svc.stop(1000);
    expect(procs[0]!.stopped).toBe(true);
    expect(events).toEqual([]);
  });
});
