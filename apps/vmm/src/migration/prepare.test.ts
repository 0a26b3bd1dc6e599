import { createLogger } from '@handoff/service';
import { describe, expect, it } from 'vitest';
import type { VmHost } from '../vm/host.js';
import { IncomingPreparations } from './prepare.js';

const logger = createLogger({ name: 'test', level: 'silent', format: 'json' });

/**
 * The part of VmHost a preparation without a hint uses: the name reservation (held in `names`)
 * and the spare-thread hold. `gate`, while set, keeps reserve() waiting (a VM of that name
 * still retiring).
 */
function fakeHost() {
  const names = new Set<string>();
  const host = {
    names,
    gate: undefined as Promise<void> | undefined,
    async reserve(name: string) {
      await host.gate;
      if (names.has(name)) {
        throw Object.assign(new Error(`${name} is taken`), { code: 'VMM_VM_EXISTS' });
      }
      names.add(name);
      return () => names.delete(name);
    },
    holdSpares: () => () => undefined,
  };
  return host;
}

const preparations = (host: ReturnType<typeof fakeHost>, ttlMs?: number) => {
  const p = new IncomingPreparations(host as unknown as VmHost, logger, null);
  return {
    p,
    prepare: (name: string, job: string) => p.prepare(name, job, undefined, ttlMs),
  };
};

describe('IncomingPreparations: an arrival frees its name the moment it ends', () => {
  it('CancelIncoming drops a prepared arrival at once: name free, token dead, answer idempotent', async () => {
    const host = fakeHost();
    const { p, prepare } = preparations(host);
    const { token } = await prepare('kv', 'job-1');
    expect(host.names.has('kv')).toBe(true);
    expect(await p.cancel('kv', 'job-1')).toBe('dropped');
    expect(host.names.has('kv')).toBe(false);
    expect(() => p.take(token)).toThrow(expect.objectContaining({ code: 'MIGRATION_BAD_TOKEN' }));
    // asked again, the same answer; another name or job is not touched
    expect(await p.cancel('kv', 'job-1')).toBe('dropped');
    expect(await p.cancel('other', 'job-1')).toBe('none');
    expect(await p.cancel('kv', 'job-2')).toBe('none');
    // an immediate retry gets the name
    await prepare('kv', 'job-2');
    expect(host.names.has('kv')).toBe(true);
    await p.close();
    expect(host.names.has('kv')).toBe(false);
  });

  it('an unused token frees the name when it expires', async () => {
    const host = fakeHost();
    const { p, prepare } = preparations(host, 30);
    await prepare('kv', 'job-1');
    await new Promise((r) => setTimeout(r, 80));
    expect(host.names.has('kv')).toBe(false);
    expect(await p.cancel('kv', 'job-1')).toBe('dropped');
  });

  it('a stream that took the token is asked to stop, and the answer is how it ended', async () => {
    const host = fakeHost();
    const { p, prepare } = preparations(host);
    const { token } = await prepare('kv', 'job-1');
    const stops: string[] = [];
    const taken = p.take(token, null, {
      stop: (why) => {
        stops.push(why);
        // the stream fails (nothing moved): it frees the name and says so
        setTimeout(() => {
          taken.release();
          taken.settle('dropped');
        }, 10);
      },
    });
    expect(await p.cancel('kv', 'job-1')).toBe('dropped');
    expect(stops).toEqual([expect.stringMatching(/job-1 was cancelled/)]);
    expect(host.names.has('kv')).toBe(false);
    // a stream past its point of no return ignores the stop and ends by itself
    const second = await prepare('kv', 'job-2');
    const arriving = p.take(second.token, null, { stop: () => undefined });
    setTimeout(() => {
      arriving.release();
      arriving.settle('arrived');
    }, 20);
    expect(await p.cancel('kv', 'job-2')).toBe('arrived');
  });

  it('a cancel that comes while PrepareIncoming still waits for the name makes it reserve nothing', async () => {
    const host = fakeHost();
    const { p, prepare } = preparations(host);
    let open!: () => void;
    host.gate = new Promise((r) => (open = r));
    const preparing = prepare('kv', 'job-1');
    await new Promise((r) => setTimeout(r, 10));
    expect(await p.cancel('kv', 'job-1')).toBe('dropped');
    open();
    await expect(preparing).rejects.toMatchObject({ code: 'MIGRATION_CANCELLED' });
    expect(host.names.has('kv')).toBe(false);
  });

  it('a refused PrepareIncoming keeps nothing', async () => {
    const host = fakeHost();
    const { p, prepare } = preparations(host);
    host.names.add('kv'); // a VM of that name runs here
    await expect(prepare('kv', 'job-1')).rejects.toMatchObject({ code: 'VMM_VM_EXISTS' });
    expect(await p.cancel('kv', 'job-1')).toBe('none');
    host.names.delete('kv');
    await prepare('kv', 'job-2');
    expect(host.names.has('kv')).toBe(true);
  });
});
