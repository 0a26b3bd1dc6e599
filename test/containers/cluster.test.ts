/**
 * The container images and the compose topology, end to end: the image built from this
 * checkout, memstore, migrator, vmm-a and vmm-b each in its own container (host networking,
 * one shared tmpfs at /dev/shm), driven by vmctl from the host. Skipped, saying why, where no
 * Docker engine answers.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseExposition, sampleValue, type MetricSample } from '@handoff/service';
import { vmctlBin, vmctlRunner } from '../helpers/vmctl.js';
import { checkDockerEngine } from './engine.js';
import { buildServiceImage, killContainer } from './images.js';
import { startContainerCluster, type ContainerCluster } from './topology.js';

const engine = await checkDockerEngine();
if (!engine.ok) {
  process.stdout.write(`\ncontainer suite skipped: ${engine.reason}\n\n`);
}

/** One scrape of a service's Prometheus endpoint, parsed. */
async function scrape(address: string): Promise<MetricSample[]> {
  const res = await fetch(`http://${address}/metrics`);
  expect(res.status).toBe(200);
  return parseExposition(await res.text());
}

/** `handoff_grpc_server_calls_total` of one method and status code. */
const calls = (s: MetricSample[], method: string, code: string): number =>
  sampleValue(s, 'handoff_grpc_server_calls_total', { method, code });

/** Keys the kvserver guest is given before the hand-off and must answer after it. */
const KEYS = { colour: 'blue', shape: 'round', n42: String(42) };

describe.skipIf(!engine.ok)(
  `the cluster in containers${engine.ok ? '' : ` (skipped: ${engine.reason})`}`,
  () => {
    let cluster: ContainerCluster | undefined;
    const c = (): ContainerCluster => {
      if (cluster === undefined) throw new Error('the container cluster did not start');
      return cluster;
    };
    const vmctl = vmctlRunner(() => ({
      HANDOFF_TLS_DIR: c().tlsDir,
      HANDOFF_MEMSTORE_ADDR: c().memstore.address,
      HANDOFF_MIGRATOR_ADDR: c().migrator.address,
    }));

    /** Pipes lines into `vmctl vm console NAME` and returns what the guest answered. */
    const consoleLines = (name: string, lines: string[]): Promise<string> =>
      new Promise((resolve, reject) => {
        const child = spawn(process.execPath, [vmctlBin, 'vm', 'console', name], {
          env: {
            ...process.env,
            HANDOFF_TLS_DIR: c().tlsDir,
            HANDOFF_MEMSTORE_ADDR: c().memstore.address,
            HANDOFF_MIGRATOR_ADDR: c().migrator.address,
          },
          stdio: ['pipe', 'pipe', 'pipe'],
        });
        let out = '';
        let err = '';
        child.stdout.on('data', (b: Buffer) => (out += b.toString()));
        child.stderr.on('data', (b: Buffer) => (err += b.toString()));
        child.on('error', reject);
        child.on('close', (code) =>
          code === 0 ? resolve(out) : reject(new Error(`vmctl vm console ${name}: ${code} ${err}`)),
        );
        child.stdin.end(lines.map((l) => `${l}\n`).join(''));
      });

    /**
     * kvserver's answers to `commands`, one line each, once it serves (it builds its table
     * first, ≈10–30 s here). The console replays earlier output, so a fresh key is written and
     * read after the commands: their answers are the lines before that unique value's.
     */
    const ask = async (
      name: string,
      commands: string[],
      deadlineMs = 120_000,
    ): Promise<string[]> => {
      const until = Date.now() + deadlineMs;
      for (;;) {
        const nonce = randomBytes(6).toString('hex');
        const out = (
          await consoleLines(name, [...commands, `PUT n${nonce} ${nonce}`, `GET n${nonce}`])
        )
          .split('\n')
          .map((l) => l.trim());
        const at = out.lastIndexOf(`VALUE ${nonce}`);
        if (at > commands.length && out[at - 1] === 'OK')
          return out.slice(at - 1 - commands.length, at - 1);
        if (Date.now() > until)
          throw new Error(
            `kvserver ${name} did not answer in time; it printed:\n${out.join('\n')}`,
          );
        await new Promise((r) => setTimeout(r, 1000));
      }
    };

    /** What kvserver answers for each of {@link KEYS}. */
    const getAll = async (name: string): Promise<Record<string, string>> => {
      const answers = await ask(
        name,
        Object.keys(KEYS).map((k) => `GET ${k}`),
      );
      return Object.fromEntries(
        Object.keys(KEYS).map((k, i) => [k, answers[i]?.replace(/^VALUE /, '') ?? '']),
      );
    };

    beforeAll(async () => {
      await buildServiceImage();
      cluster = await startContainerCluster(randomBytes(4).toString('hex'));
    }, 20 * 60_000);

    afterAll(async () => {
      await cluster?.stop();
    }, 120_000);

    it('serves from four containers that vmctl on the host reaches with mutual TLS', async () => {
      const status = await vmctl.run('status');
      expect(status.code, status.stderr).toBe(0);
      expect(status.stdout).toMatch(/vmm-a\s+127\.0\.0\.1:\d+\s+SERVING/);
      expect(status.stdout).toMatch(/vmm-b\s+127\.0\.0\.1:\d+\s+SERVING/);
      // The services run as the unprivileged user, not root.
      const id = await c().memstore.container.exec(['id', '-u']);
      expect(id.output.trim()).toBe(c().user.split(':')[0]);
      expect(id.output.trim()).not.toBe('0');
    });

    it(
      'live-updates a shared-RAM VM from the vmm-a container to vmm-b by reference, and it ' +
        'keeps answering after the vmm-a container is killed',
      async () => {
        const created = await vmctl.run(
          'vm',
          'create',
          'kv',
          '--guest',
          'kvserver',
          '--memory',
          '64M',
          '--shared',
          '--vmm',
          'vmm-a',
        );
        expect(created.code, created.stderr).toBe(0);
        const put = await ask(
          'kv',
          Object.entries(KEYS).map(([k, v]) => `PUT ${k} ${v}`),
        );
        expect(put).toEqual(Object.keys(KEYS).map(() => 'OK'));
        expect(await getAll('kv')).toEqual(KEYS);

        const update = await vmctl.json<{ job: LiveUpdateJob }>(
          'live-update',
          '--from',
          'vmm-a',
          '--to',
          'vmm-b',
        );
        expect(update.job.status).toBe('completed');
        const ram = update.job.info.ram;
        expect(ram['bypassed-bytes']).toBe(64 * 1024 * 1024);
        expect(ram.transferred).toBe(0);
        const child = await vmctl.json<{
          job: { info: { route?: { transport: string; 'lease-move': string } } };
        }>('jobs', 'show', update.job.children[0]!);
        // The vCPU threads of the two containers met in a slot of the shared tmpfs.
        expect(child.job.info.route).toMatchObject({
          transport: 'switchover-slot',
          'lease-move': 'armed',
        });

        // The metrics endpoints of the containers counted it.
        const migrator = await scrape(c().migrator.metrics);
        expect(
          sampleValue(migrator, 'handoff_migrations_total', {
            mode: 'bypass',
            outcome: 'completed',
          }),
        ).toBe(1);
        expect(calls(migrator, 'LiveUpdate', 'OK')).toBe(1);
        expect(calls(await scrape(c().vmms['vmm-a'].metrics), 'MigrateVm', 'OK')).toBe(1);

        await killContainer(c().vmms['vmm-a'].container.getId());
        expect(await getAll('kv')).toEqual(KEYS);
        const shown = await vmctl.json<{ vm: { name: string; vmm: string; state: string } }>(
          'vm',
          'show',
          'kv',
          '--vmm',
          'vmm-b',
        );
        expect(shown.vm).toMatchObject({ name: 'kv', vmm: 'vmm-b', state: 'running' });
      },
      240_000,
    );

    it('keeps every region when the memstore container stops and starts again', async () => {
      type Listing = { regions: { name: string; id: string; holder?: string; epoch?: string }[] };
      const before = await vmctl.json<Listing>('region', 'list');
      expect(before.regions.length).toBeGreaterThan(0);
      await c().memstore.container.restart({ timeout: 10_000 });
      const after = await vmctl.json<Listing>('region', 'list');
      expect(after.regions.map((r) => r.id).sort()).toEqual(before.regions.map((r) => r.id).sort());
      // The VM's memory is the file memstore hands out: it still answers with its keys.
      expect(await getAll('kv')).toEqual(KEYS);
    }, 120_000);

    it('keeps a hostile client in its own container away from the services and their files', async () => {
      const [uid] = c().user.split(':');
      const ca = readFileSync(join(c().tlsDir, 'ca.pem'), 'utf8');
      const probe = await c()
        .container()
        .withName(`handoff-hostile-${randomBytes(3).toString('hex')}`)
        .withUser('20002:20002')
        .withBindMounts([{ source: c().shmDir, target: '/dev/shm', mode: 'rw' }])
        .withCopyContentToContainer([
          { content: ca, target: '/tmp/real-ca.pem', mode: 0o644 },
          { content: RAW_CALL, target: '/tmp/call.cjs', mode: 0o644 },
        ])
        .withEntrypoint(['sleep', 'infinity'])
        .start();
      try {
        const sh = (script: string) => probe.exec(['sh', '-c', script]);
        // The shared memory folder is the services' user's (0700): not even listed.
        const ls = await sh(`ls /dev/shm/handoff-${uid} 2>&1`);
        expect(ls.exitCode).not.toBe(0);
        expect(ls.output).toMatch(/Permission denied/);
        // Its own pid namespace: no process of another container is there to read.
        const procs = await sh("cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' '");
        expect(procs.output).not.toMatch(/memstore|vmm|migrator/);
        // An operator certificate of its own CA, trusting the real CA (ca.pem is public): a raw
        // gRPC call (vmctl itself refuses such a pair before calling) is refused by memstore.
        const refusedBefore = calls(
          await scrape(c().memstore.metrics),
          'ListRegions',
          'UNAUTHENTICATED',
        );
        const call = await sh(
          'handoff-pki --dir /tmp/own >/dev/null && ' +
            `node /tmp/call.cjs ${c().memstore.address} /tmp/own/operator 2>/dev/null`,
        );
        expect(call.exitCode).toBe(1);
        expect(call.output).toMatch(
          /^refused: UNAUTHENTICATED .*client certificate signed by the cluster's CA/m,
        );
        expect(calls(await scrape(c().memstore.metrics), 'ListRegions', 'UNAUTHENTICATED')).toBe(
          refusedBefore + 1,
        );
        // Health is public by design (probes): the same container sees the service serving.
        const health = await sh(
          `handoff-health-probe --ca=/tmp/real-ca.pem ${c().memstore.address}`,
        );
        expect(health.exitCode, health.output).toBe(0);
      } finally {
        await probe.stop({ timeout: 0 });
      }
    }, 120_000);
  },
);

/**
 * A client of memstore's ListRegions with the certificate `<prefix>.pem`/`.key` given, trusting
 * /tmp/real-ca.pem: prints `answered: N bytes` (exit 0) or `refused: CODE details` (exit 1).
 */
const RAW_CALL = `
const grpc = require('/opt/handoff/node_modules/@grpc/grpc-js');
const { readFileSync } = require('node:fs');
const [address, prefix] = process.argv.slice(2);
const creds = grpc.credentials.createSsl(
  readFileSync('/tmp/real-ca.pem'), readFileSync(prefix + '.key'), readFileSync(prefix + '.pem'));
const client = new grpc.Client(address, creds);
client.makeUnaryRequest('/handoff.memstore.v1.MemstoreService/ListRegions', (x) => x, (x) => x,
  Buffer.alloc(0), { deadline: Date.now() + 5000 }, (err, res) => {
    console.log(err ? 'refused: ' + grpc.status[err.code] + ' ' + err.details : 'answered: ' + res.length + ' bytes');
    process.exit(err ? 1 : 0);
  });
`;

/** The parts of `vmctl live-update --output json` the suite reads. */
interface LiveUpdateJob {
  status: string;
  children: string[];
  info: { ram: { 'bypassed-bytes': number; transferred: number } };
}
