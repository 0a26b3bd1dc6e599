#!/usr/bin/env node
/**
 * `npm start`: runs the local cluster (memstore, migrator, vmm-a, vmm-b) on
 * loopback with readable logs, until Ctrl-C.
 */
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { startCluster } from './launcher.js';
import { formatLogLine, colourFor } from './log-lines.js';

const usage = `Usage: npm start [-- options]

Runs the Handoff local cluster as child processes on loopback: memstore, migrator,
vmm-a and vmm-b. Ctrl-C stops all of them.

Options:
  --state-dir <dir>     catalog, persistent regions, ready files (default: ./.handoff, HANDOFF_STATE_DIR)
  --volatile-dir <dir>  tmpfs directory for volatile regions (default: memstore's /dev/shm/handoff-<uid>)
  --base-port <port>    migrator port; memstore +100, vmm-a +201, vmm-b +202 (default: 7000)
  --log-format <f>      pretty or json (default: pretty on a terminal)
  --log-level <level>   info, debug, ... (default: info)
  --insecure            serve plaintext, without certificates (any local process may then call
                        every RPC); default: mutual TLS with the CA and certificates that the
                        first start creates in <state-dir>/tls (vmctl finds its certificate there)
  --help                this text
`;

const { values } = parseArgs({
  options: {
    'state-dir': { type: 'string' },
    'volatile-dir': { type: 'string' },
    'base-port': { type: 'string' },
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
const base = Number(values['base-port'] ?? 7000);
if (!Number.isInteger(base) || base < 1 || base > 65000) {
  process.stderr.write(`--base-port ${values['base-port']} is not a port number\n`);
  process.exit(2);
}
const tty = process.stdout.isTTY === true;
const logFormat = (values['log-format'] ?? (tty ? 'pretty' : 'json')) as 'pretty' | 'json';
const stateDir =
  values['state-dir'] ?? process.env.HANDOFF_STATE_DIR ?? join(process.cwd(), '.handoff');

let stopping = false;
const cluster = await startCluster({
  stateDir,
  ...(values['volatile-dir'] !== undefined ? { volatileDir: values['volatile-dir'] } : {}),
  ports: {
    migrator: base,
    memstore: base + 100,
    vmms: { 'vmm-a': base + 201, 'vmm-b': base + 202 },
  },
  logFormat,
  ...(values['log-level'] !== undefined ? { logLevel: values['log-level'] } : {}),
  insecure: values.insecure === true,
  onLine: (service, line, stream) => {
    const out = formatLogLine(service, line, tty ? colourFor(service) : undefined);
    (stream === 'stderr' ? process.stderr : process.stdout).write(out + '\n');
  },
  onExit: (service, code, signal) => {
    process.stderr.write(
      `\n${service} exited unexpectedly (code ${code}, signal ${signal}); stopping the cluster\n`,
    );
    void shutdown(1);
  },
}).catch((err: unknown) => {
  process.stderr.write(`cannot start the cluster: ${(err as Error).message}\n`);
  process.exit(1);
});

const pad = (s: string) => s.padEnd(10);
process.stdout.write(
  [
    '',
    'Handoff local cluster is up:',
    `  ${pad('memstore')}${cluster.memstore}`,
    `  ${pad('migrator')}${cluster.migrator}`,
    ...Object.entries(cluster.vmms).map(([id, a]) => `  ${pad(id)}${a}`),
    '',
    cluster.tlsDir === null
      ? 'Plaintext (--insecure): run vmctl with --insecure or HANDOFF_INSECURE=1.'
      : `Mutual TLS: the CA and certificates are in ${cluster.tlsDir} (vmctl finds operator.pem there).`,
    'Try `npx vmctl status` in another terminal. Ctrl-C stops the cluster.',
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
