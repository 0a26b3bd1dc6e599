import { helpText, parseConfig, type ConfigOf, type ConfigSpec } from './config.js';
import { isCodedError } from './errors.js';
import { createLogger, type LogFormat, type Logger } from './logger.js';
import { stopOnSignals } from './lifecycle.js';
import { writeReadyFile } from './ready.js';
import { HANDOFF_VERSION } from './version.js';
import { tlsOptions } from './trust/material.js';

/** Options every Handoff service accepts. */
export function commonOptions(defaultPort: number) {
  return {
    host: {
      type: 'string',
      default: '127.0.0.1',
      description: 'address to listen on (loopback unless told otherwise)',
    },
    port: {
      type: 'number',
      default: defaultPort,
      min: 0,
      max: 65535,
      description: 'TCP port to listen on; 0 picks a free port (see --ready-file)',
    },
    'metrics-port': {
      type: 'number',
      default: 0,
      min: 0,
      max: 65535,
      description:
        'serve Prometheus metrics over plain HTTP at http://<host>:<port>/metrics (same host as ' +
        '--host); 0 = no metrics server',
    },
    'log-level': {
      type: 'string',
      default: 'info',
      description: 'pino level: trace, debug, info, warn, error, fatal',
    },
    'log-format': {
      type: 'string',
      default: 'auto',
      description: 'json, pretty, or auto (pretty on a terminal)',
    },
    'ready-file': {
      type: 'string',
      description: 'once serving, write {service,address,pid,version} as JSON to this path',
    },
    'stop-on-stdin-close': {
      type: 'boolean',
      default: false,
      description:
        'stop gracefully when standard input closes (a launcher that dies takes its services with it)',
    },
    'shutdown-timeout-ms': {
      type: 'number',
      default: 5000,
      min: 0,
      description:
        'on SIGTERM/SIGINT, how long open calls may finish before the server is forced down',
    },
    ...tlsOptions(),
  } as const satisfies ConfigSpec;
}

/** The common part of every service's parsed config. */
export type CommonConfig = ConfigOf<ReturnType<typeof commonOptions>>;

/** A started service as main() sees it. */
export interface StartedService {
  address: string;
  /** host:port of its metrics endpoint, or null when it serves none (`--metrics-port 0`). */
  metricsAddress?: string | null;
  stop(reason: string): Promise<void>;
}

/**
 * The shared `main` of a service executable: `--help`, config from flags and
 * `HANDOFF_<PREFIX>_*`, a logger, start, the ready file, and a graceful stop on
 * SIGTERM/SIGINT. Exit code 2 for bad configuration, 1 for start-up failure.
 */
export async function serviceMain<S extends ConfigSpec>(def: {
  name: string;
  prefix: string;
  title: string;
  spec: S;
  argv?: string[];
  start(config: ConfigOf<S>, logger: Logger): Promise<StartedService>;
}): Promise<void> {
  const argv = def.argv ?? process.argv.slice(2);
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(helpText(def.title, `${def.name} [options]`, def.spec, def.prefix) + '\n');
    return;
  }
  let config: ConfigOf<S>;
  try {
    config = parseConfig(def.spec, { prefix: def.prefix, argv });
  } catch (err) {
    process.stderr.write(`${def.name}: ${(err as Error).message}\n`);
    process.exit(2);
  }
  const c = config as unknown as Partial<CommonConfig>;
  const logger = createLogger({
    name: def.name,
    level: c['log-level'] ?? 'info',
    format: (c['log-format'] ?? 'auto') as LogFormat,
  });
  let started: StartedService;
  try {
    started = await def.start(config, logger);
  } catch (err) {
    const code = isCodedError(err) ? err.code : 'SERVICE_INTERNAL';
    logger.fatal({ err, code }, `${def.name} failed to start: ${(err as Error).message}`);
    process.exit(1);
  }
  const stopSignals = stopOnSignals(logger, (reason) => started.stop(reason));
  if (c['stop-on-stdin-close'] === true) {
    process.stdin.on('error', () => undefined);
    process.stdin.on('end', () => {
      stopSignals();
      started.stop('standard input closed (launcher gone)').then(
        () => process.exit(0),
        () => process.exit(1),
      );
    });
    process.stdin.resume();
  }
  if (c['ready-file'] !== undefined) {
    writeReadyFile(c['ready-file'], {
      service: def.name,
      address: started.address,
      pid: process.pid,
      version: HANDOFF_VERSION,
      ...(started.metricsAddress ? { metrics: started.metricsAddress } : {}),
    });
  }
}

/**
 * glibc malloc settings for service processes: large thresholds keep the
 * allocator from returning and re-faulting memory for every 1 MiB protobuf
 * frame (measured: protobuf 5-15x and gRPC streaming 2.5-3x faster).
 * Launchers pass them in the environment of the processes they start.
 */
export const SERVICE_MALLOC_ENV: Readonly<Record<string, string>> = {
  MALLOC_MMAP_THRESHOLD_: '268435456',
  MALLOC_TRIM_THRESHOLD_: '1073741824',
  MALLOC_TOP_PAD_: '67108864',
};
