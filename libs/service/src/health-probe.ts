/**
 * `handoff-health-probe`: asks one service's grpc.health.v1 whether it serves, for container
 * health checks (no grpcurl in the image). Health answers callers without a client certificate,
 * so the probe needs only the CA that signed the server's certificate (or `--insecure` for a
 * plaintext service).
 *
 * @packageDocumentation
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import { checkHealth, type HealthStatus } from './client.js';

/** What one probe asks. */
export interface ProbeRequest {
  /** `host:port` of the service. */
  readonly address: string;
  /** PEM file of the CA, or null for a plaintext service (`--insecure`). */
  readonly caFile: string | null;
  /** The health service name ('' = the whole server). */
  readonly service: string;
  readonly timeoutMs: number;
}

/** The help text of the probe. */
export const PROBE_USAGE = `Usage: handoff-health-probe [--ca FILE | --insecure] [--service NAME] [--timeout-ms N] HOST:PORT

Asks the service at HOST:PORT (grpc.health.v1 Check) whether it serves. Exit status 0 when it
answers SERVING, 1 otherwise (not serving, unreachable, TLS mismatch), 2 for a bad command line.
  --ca FILE        the CA certificate (PEM) the server's certificate must chain to
                   (default: HANDOFF_PROBE_CA, else <HANDOFF_PROBE_TLS_DIR>/ca.pem)
  --insecure       the service serves plaintext
  --service NAME   a service name to ask about (default: the whole server)
  --timeout-ms N   deadline of the call (default: 2000)
`;

/** Thrown for a command line the probe cannot use; the message says what is wrong. */
export class ProbeUsageError extends Error {
  override readonly name = 'ProbeUsageError';
}

/** Parses the probe's arguments (and its two variables). @throws ProbeUsageError */
export function parseProbeArgs(
  argv: readonly string[],
  env: NodeJS.ProcessEnv = process.env,
): ProbeRequest | 'help' {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...argv],
      options: {
        ca: { type: 'string' },
        insecure: { type: 'boolean' },
        service: { type: 'string' },
        'timeout-ms': { type: 'string' },
        help: { type: 'boolean' },
      },
      allowPositionals: true,
      strict: true,
    });
  } catch (err) {
    throw new ProbeUsageError((err as Error).message);
  }
  const { values, positionals } = parsed;
  if (values.help === true) return 'help';
  const [address, ...extra] = positionals;
  if (address === undefined || !/^(\[[^\]]+\]|[^:[\]]+):\d{1,5}$/.test(address)) {
    throw new ProbeUsageError(`give the service's address as HOST:PORT (got ${address ?? 'none'})`);
  }
  if (extra.length > 0) throw new ProbeUsageError(`one address only (also got ${extra.join(' ')})`);
  const timeoutMs = Number(values['timeout-ms'] ?? 2000);
  if (!Number.isInteger(timeoutMs) || timeoutMs < 1) {
    throw new ProbeUsageError(`--timeout-ms ${values['timeout-ms']} is not a positive integer`);
  }
  const tlsDir = env['HANDOFF_PROBE_TLS_DIR'];
  const caFile =
    values.ca ??
    (env['HANDOFF_PROBE_CA'] || undefined) ??
    (tlsDir ? `${tlsDir.replace(/\/$/, '')}/ca.pem` : undefined);
  if (values.insecure === true && values.ca !== undefined) {
    throw new ProbeUsageError('--insecure and --ca exclude each other');
  }
  if (values.insecure !== true && caFile === undefined) {
    throw new ProbeUsageError('name the CA with --ca FILE (or --insecure for a plaintext service)');
  }
  return {
    address,
    caFile: values.insecure === true ? null : caFile!,
    service: values.service ?? '',
    timeoutMs,
  };
}

/** The probe's verdict: the status seen, a line to print, and the exit status. */
export interface ProbeResult {
  readonly status: HealthStatus;
  readonly line: string;
  readonly exitCode: 0 | 1;
}

/**
 * Asks the service once. Never throws for the service's sake: an unreadable CA file or an
 * unreachable service is a failed probe (exit status 1) with the reason in its line.
 */
export async function probeHealth(req: ProbeRequest): Promise<ProbeResult> {
  let credentials: grpc.ChannelCredentials;
  if (req.caFile === null) {
    credentials = grpc.credentials.createInsecure();
  } else {
    try {
      credentials = grpc.credentials.createSsl(readFileSync(req.caFile));
    } catch (err) {
      return {
        status: 'UNREACHABLE',
        line: `${req.address}: cannot use the CA ${req.caFile}: ${(err as Error).message}`,
        exitCode: 1,
      };
    }
  }
  const res = await checkHealth(req.address, credentials, req.service, req.timeoutMs);
  const what = req.service === '' ? req.address : `${req.address} (${req.service})`;
  return {
    status: res.status,
    line: `${what}: ${res.status}${res.error !== undefined ? ` (${res.error})` : ''}`,
    exitCode: res.status === 'SERVING' ? 0 : 1,
  };
}
