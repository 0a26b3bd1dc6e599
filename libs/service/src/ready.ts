import { renameSync, writeFileSync } from 'node:fs';

/** What a service writes to its `--ready-file` once it is serving. */
export interface ReadyInfo {
  service: string;
  /** host:port the gRPC server listens on. */
  address: string;
  pid: number;
  version: string;
  /** host:port of its metrics endpoint (`GET /metrics`); absent when it serves none. */
  metrics?: string;
}

/**
 * Writes the ready file atomically (temp file + rename), so a reader never
 * sees a partial document. Launchers and tests start services with `--port 0
 * --ready-file PATH` and poll for the file to learn the bound address.
 */
export function writeReadyFile(path: string, info: ReadyInfo): void {
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify(info) + '\n');
  renameSync(tmp, path);
}
