#!/usr/bin/env node
/**
 * `npm start`: runs the local cluster (memstore, migrator, vmm-a, vmm-b; with `--hosts 2` also
 * memstore-2 and vmm-c on host-2) on loopback with readable logs, until Ctrl-C.
 */
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { startCluster } from './launcher.js';
import { HOSTS_USAGE, parseHostCount, SECOND_HOST } from './hosts.js';
import { formatLogLine, colourFor } from './log-lines.js';
import { describeEvent } from './supervision-lines.js';

const usage = `Usage: npm start [-- options]

Runs the Handoff local cluster as child processes on loopback: memstore, migrator,
vmm-a and vmm-b. A service that dies is started again on its port after 0.5 s, then
1, 2, 4 ... up to 10 s if it keeps dying (back to 0.5 s once it stayed up 30 s); after
6 deaths within a minute it stays down and the rest keeps running. Ctrl-C stops all of
them; none outlives this command.

Options:
  --hosts <n>           1 (default) or 2 hosts on this machine. A host is one memstore with its
                        own folders plus the vmm instances that use it: host-1 is memstore, vmm-a
                        and vmm-b; host-2 is memstore-2 (state in <state-dir>/host-2, volatile
                        regions in <volatile-dir>-host-2, port base +300) and vmm-c (--host-id
                        host-2, port base +401), which maps only memstore-2's files. One
                        migrator serves both; \`vmctl status\` groups the vmm instances by host
  --state-dir <dir>     catalog, persistent regions, ready files (default: ./.handoff, HANDOFF_STATE_DIR)
  --volatile-dir <dir>  tmpfs directory for volatile regions (default: memstore's /dev/shm/handoff-<uid>)
  --base-port <port>    migrator port; memstore +100, vmm-a +201, vmm-b +202 (default: 7000);
                        0: free ports, printed once the cluster is up
                        Each service also serves Prometheus metrics over plain HTTP on its
                        port + 1000 (migrator 8000, memstore 8100, vmm-a 8201, vmm-b 8202);
                        with --base-port 0 on free ports. The addresses are printed once the
                        cluster is up; scrape http://ADDRESS/metrics (docs/metrics.md)
  --no-metrics          serve no metrics
  --guest-dir <dir>     folder the vmm instances read guest ELFs from besides the built-ins
                        (vmctl vm create --guest NAME-IN-DIR); default: built-in guests only
  --no-restart          leave a service that dies down instead of restarting it
  --log-format <f>      pretty or json (default: pretty on a terminal)
  --log-level <level>   info, debug, ... (default: info)
  --insecure            serve plaintext, without certificates (any local process may then call
                        every RPC); default: mutual TLS with the CA and certificates that the
                        first start creates in <state-dir>/tls (vmctl finds its certificate there)
  --help                this text
`;

const { values } = parseArgs({
  options: {
    hosts: { type: 'string' },
    'state-dir': { type: 'string' },
    'volatile-dir': { type: 'string' },
    'base-port': { type: 'string' },
    'guest-dir': { type: 'string' },
    'no-restart': { type: 'boolean' },
    'no-metrics': { type: 'boolean' },
    'log-format': { type: 'string' },
    'log-level': { type: 'string' },
    insecure: { type: 'boolean' },
    help: { type: 'boolean' },
  },
  strict: true,
});
if (values.help) {
  process.stdout.write(usage);
  process.exit(0);
}
const hosts = parseHostCount(values.hosts);
if (hosts instanceof Error) {
  process.stderr.write(`${hosts.message}\n\n${HOSTS_USAGE}\n`);
  process.exit(2);
}
/** Metrics ports are the service ports + this. */
const METRICS_OFFSET = 1000;
const base = Number(values['base-port'] ?? 7000);
const highestOffset = hosts === 2 ? SECOND_HOST.vmmOffset : 202;
const highestBase = 65535 - METRICS_OFFSET - highestOffset;
if (!Number.isInteger(base) || base < 0 || base > highestBase) {
  process.stderr.write(
    `--base-port ${values['base-port']} is not a port number up to ${highestBase} (the metrics ` +
      `ports go up to base + ${METRICS_OFFSET + highestOffset}), or 0 for free ports\n`,
  );
  process.exit(2);
}
const port = (offset: number): number => (base === 0 ? 0 : base + offset);
const metricsPort = (offset: number): number => (base === 0 ? 0 : base + METRICS_OFFSET + offset);
const guestDir = values['guest-dir'] === undefined ? undefined : resolve(values['guest-dir']);
const tty = process.stdout.isTTY === true;
const logFormat = (values['log-format'] ?? (tty ? 'pretty' : 'json')) as 'pretty' | 'json';
const stateDir =
  values['state-dir'] ?? process.env.HANDOFF_STATE_DIR ?? join(process.cwd(), '.handoff');

let stopping = false;
const cluster = await startCluster({
  stateDir,
  ...(values['volatile-dir'] !== undefined ? { volatileDir: values['volatile-dir'] } : {}),
  ports: {
    migrator: port(0),
    memstore: port(100),
    vmms: { 'vmm-a': port(201), 'vmm-b': port(202) },
  },
  ...(values['no-metrics'] === true
    ? {}
    : {
        metricsPorts: {
          migrator: metricsPort(0),
          memstore: metricsPort(100),
          vmms: { 'vmm-a': metricsPort(201), 'vmm-b': metricsPort(202) },
        },
      }),
  ...(hosts === 2
    ? {
        extraHosts: [
          {
            memstorePort: port(SECOND_HOST.memstoreOffset),
            vmms: { [SECOND_HOST.vmm]: port(SECOND_HOST.vmmOffset) },
            ...(values['no-metrics'] === true
              ? {}
              : {
                  metricsPorts: {
                    memstore: metricsPort(SECOND_HOST.memstoreOffset),
                    vmms: { [SECOND_HOST.vmm]: metricsPort(SECOND_HOST.vmmOffset) },
                  },
                }),
          },
        ],
      }
    : {}),
  ...(guestDir !== undefined ? { guestDir } : {}),
  ...(values['no-restart'] === true ? { restart: null } : {}),
  logFormat,
  ...(values['log-level'] !== undefined ? { logLevel: values['log-level'] } : {}),
  insecure: values.insecure === true,
  onLine: (service, line, stream) => {
    const out = formatLogLine(service, line, tty ? colourFor(service) : undefined);
    (stream === 'stderr' ? process.stderr : process.stdout).write(out + '\n');
  },
  onEvent: (event) => {
    if (!stopping) process.stderr.write(`${describeEvent(event)}\n`);
  },
}).catch((err: unknown) => {
  process.stderr.write(`cannot start the cluster: ${(err as Error).message}\n`);
  process.exit(1);
});

const pad = (s: string) => s.padEnd(Math.max(10, s.length + 2));
process.stdout.write(
  [
    '',
    'Handoff local cluster is up:',
    `  ${pad('memstore')}${cluster.memstore}`,
    `  ${pad('migrator')}${cluster.migrator}`,
    ...Object.entries(cluster.vmms).map(([id, a]) => `  ${pad(id)}${a}`),
    ...cluster.hosts.slice(1).map((h) => `  ${pad(h.memstoreName)}${h.memstore}`),
    '',
    `Hosts (${cluster.hosts.length}; a vmm instance maps only its own host's memstore files):`,
    ...cluster.hosts.map(
      (h) =>
        `  ${pad(h.id)}${h.memstoreName} ${h.memstore} (volatile regions in ` +
        `${h.volatileDir ?? "memstore's default folder"}, state in ${h.stateDir}); ` +
        `vmm ${h.vmms.join(', ')}`,
    ),
    '',
    ...(Object.keys(cluster.metrics).length === 0
      ? []
      : [
          'Prometheus metrics (plain HTTP, docs/metrics.md):',
          ...Object.entries(cluster.metrics).map(([id, a]) => `  ${pad(id)}http://${a}/metrics`),
          '',
        ]),
    cluster.tlsDir === null
      ? 'Plaintext (--insecure): run vmctl with --insecure or HANDOFF_INSECURE=1.'
      : `Mutual TLS: the CA and certificates are in ${cluster.tlsDir} (vmctl finds operator.pem there).`,
    base === 7000
      ? 'Try `npx vmctl status` in another terminal. Ctrl-C stops the cluster.'
      : `Try \`HANDOFF_MEMSTORE_ADDR=${cluster.memstore} HANDOFF_MIGRATOR_ADDR=${cluster.migrator} ` +
        'npx vmctl status` in another terminal. Ctrl-C stops the cluster.',
    '',
  ].join('\n') + '\n',
);

async function shutdown(code: number): Promise<void> {
  if (stopping) return;
  stopping = true;
  process.stdout.write('\nstopping the cluster...\n');
  await cluster.stop();
  process.stdout.write('cluster stopped.\n');
  process.exit(code);
}
process.on('SIGINT', () => void shutdown(0));
process.on('SIGTERM', () => void shutdown(0));
