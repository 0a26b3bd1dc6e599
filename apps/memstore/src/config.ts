import {
  commonOptions,
  parseConfig,
  ServiceError,
  type ConfigOf,
  type ConfigSpec,
} from '@handoff/service';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseByteSize } from './regions/size.js';

/** File name of the lease channel's socket inside the volatile directory (the default). */
export const LEASE_SOCKET_FILE_NAME = 'memstore-lease.sock';

/** Default port of the memstore. */
export const MEMSTORE_DEFAULT_PORT = 7100;

/** The page channel's default unix socket in the volatile directory (plaintext clusters). */
export function pageSocketFileName(catalogId: string): string {
  return `memstore-pages-${catalogId}.sock`;
}

/** Flags (`--name`) and variables (`HANDOFF_MEMSTORE_NAME`) of the memstore. */
export const memstoreOptions = {
  ...commonOptions(MEMSTORE_DEFAULT_PORT),
  'state-dir': {
    type: 'string',
    description:
      'directory of the catalog (catalog.db) (default: $XDG_DATA_HOME/handoff/memstore, else ~/.local/share/handoff/memstore)',
  },
  'volatile-dir': {
    type: 'string',
    description: 'tmpfs directory of VOLATILE region files (default: /dev/shm/handoff-<uid>)',
  },
  'persistent-dir': {
    type: 'string',
    description: 'directory of PERSISTENT region files (default: <state-dir>/regions)',
  },
  'max-region-size': {
    type: 'string',
    default: '64GiB',
    description: 'largest region a client may create; bytes or K/M/G/T (binary) units, e.g. 512M',
  },
  'max-total-size': {
    type: 'string',
    default: '0',
    description: 'largest sum of all region sizes, same units; 0 = no limit',
  },
  'lease-socket': {
    type: 'string',
    description:
      `unix socket of the lease channel (TransferLease/GetRegion/ValidateLease without gRPC, for vmms on this host); ` +
      `off = disabled (default: <volatile-dir>/${LEASE_SOCKET_FILE_NAME})`,
  },
  'page-channel': {
    type: 'string',
    description:
      "where other memstores read lazy regions' pages (post-copy across hosts): host:port (mutual " +
      'TLS with memstore certificates), unix:/path (plaintext), or off; default auto: ' +
      '<host>:0 with TLS material, else unix:<volatile-dir>/memstore-pages-<catalog id>.sock',
  },
  'holder-grace-ms': {
    type: 'number',
    default: 10_000,
    min: 0,
    description:
      'how long a lease holder whose process memstore cannot see (another pid namespace) may stay ' +
      'disconnected from the lease channel before its leases are fenced',
  },
  'holder-sweep-ms': {
    type: 'number',
    default: 1_000,
    min: 10,
    description: 'how often every lease holder process is checked (a /proc read each)',
  },
} as const satisfies ConfigSpec;

/** The memstore's parsed flags and variables. */
export type MemstoreConfig = ConfigOf<typeof memstoreOptions>;

/** The config with defaults resolved, paths absolute and sizes in bytes. */
export interface MemstoreSettings {
  readonly host: string;
  readonly port: number;
  readonly shutdownTimeoutMs: number;
  readonly stateDir: string;
  readonly volatileDir: string;
  readonly persistentDir: string;
  readonly maxRegionSize: number;
  readonly maxTotalSize: number;
  /** Unix socket path of the lease channel; null when disabled (`--lease-socket off`). */
  readonly leaseSocket: string | null;
  /**
   * The page channel's listen address (`host:port`, `unix:/path`), `auto` (resolved at start:
   * `<host>:0` with TLS, else a unix socket in the volatile directory), or null: not served.
   */
  readonly pageChannel: string | null;
  /** How long a holder judged by its connection may stay disconnected before it is gone. */
  readonly holderGraceMs: number;
  /** How often holder processes are checked. */
  readonly holderSweepMs: number;
}

/**
 * A full config from defaults plus overrides (for tests and embedding), ignoring the process's
 * argv and environment. It serves plaintext (`insecure`) unless the overrides name TLS files:
 * an embedding process talks to it in-process; the executable never defaults to plaintext.
 */
export function memstoreConfig(overrides: Partial<MemstoreConfig> = {}): MemstoreConfig {
  const tlsGiven = (['tls-dir', 'tls-ca', 'tls-cert', 'tls-key'] as const).some(
    (k) => overrides[k] !== undefined,
  );
  return {
    ...parseConfig(memstoreOptions, { prefix: 'MEMSTORE', argv: [], env: {} }),
    insecure: !tlsGiven,
    ...overrides,
  };
}

/** Resolves defaults that depend on the environment and checks sizes. Throws SERVICE_INVALID_CONFIG. */
export function resolveSettings(
  config: MemstoreConfig,
  env: NodeJS.ProcessEnv = process.env,
): MemstoreSettings {
  const dataHome =
    env['XDG_DATA_HOME'] !== undefined && env['XDG_DATA_HOME'] !== ''
      ? env['XDG_DATA_HOME']
      : join(homedir(), '.local', 'share');
  const stateDir = resolve(config['state-dir'] ?? join(dataHome, 'handoff', 'memstore'));
  const uid = process.getuid?.() ?? 0;
  const volatileDir = resolve(config['volatile-dir'] ?? `/dev/shm/handoff-${uid}`);
  return {
    host: config.host,
    port: config.port,
    shutdownTimeoutMs: config['shutdown-timeout-ms'],
    stateDir,
    volatileDir,
    persistentDir: resolve(config['persistent-dir'] ?? join(stateDir, 'regions')),
    maxRegionSize: sizeOption(config, 'max-region-size', false),
    maxTotalSize: sizeOption(config, 'max-total-size', true),
    leaseSocket: leaseSocketOption(config['lease-socket'], volatileDir),
    pageChannel: pageChannelOption(config['page-channel']),
    holderGraceMs: config['holder-grace-ms'],
    holderSweepMs: config['holder-sweep-ms'],
  };
}

/** Longest unix socket path Linux accepts (sun_path is 108 bytes with the terminating NUL). */
const MAX_SOCKET_PATH_BYTES = 107;

function leaseSocketOption(text: string | undefined, volatileDir: string): string | null {
  if (text === 'off') return null;
  const path =
    text === undefined || text === '' ? join(volatileDir, LEASE_SOCKET_FILE_NAME) : resolve(text);
  if (Buffer.byteLength(path) > MAX_SOCKET_PATH_BYTES) {
    throw new ServiceError(
      'SERVICE_INVALID_CONFIG',
      `--lease-socket ${path} is longer than the ${MAX_SOCKET_PATH_BYTES} bytes a unix socket ` +
        'path may have; give a shorter path (or a shorter --volatile-dir), or --lease-socket off',
    );
  }
  return path;
}

function pageChannelOption(text: string | undefined): string | null {
  if (text === 'off') return null;
  if (text === undefined || text === '' || text === 'auto') return 'auto';
  if (text.startsWith('unix:/') || /^.+:\d{1,5}$/.test(text)) return text;
  throw new ServiceError(
    'SERVICE_INVALID_CONFIG',
    `--page-channel ${text} is neither host:port, unix:/path, auto nor off`,
  );
}

function sizeOption(
  config: MemstoreConfig,
  name: 'max-region-size' | 'max-total-size',
  zeroOk: boolean,
): number {
  const text = config[name];
  const n = parseByteSize(text);
  if (n === undefined || (n === 0 && !zeroOk) || n % 4096 !== 0) {
    throw new ServiceError(
      'SERVICE_INVALID_CONFIG',
      `--${name}=${text} is not a usable size; give bytes (a multiple of 4096) or a size such as 512M or 64GiB`,
    );
  }
  return n;
}
