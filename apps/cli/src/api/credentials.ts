/**
 * Where vmctl finds its operator certificate, in this order: `--insecure` or
 * `HANDOFF_INSECURE=1` (plaintext, for a cluster started with `--insecure`);
 * `HANDOFF_TLS_CERT`, `HANDOFF_TLS_KEY`, `HANDOFF_TLS_CA` (three files); `HANDOFF_TLS_DIR` (a
 * folder with `ca.pem`, `operator.pem`, `operator.key`); else the local cluster's folder,
 * `<HANDOFF_STATE_DIR or ./.handoff>/tls`, which `npm start` fills on its first start.
 *
 * @packageDocumentation
 */
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { loadTls, type TlsMaterial } from '@handoff/service';
import { CliError } from '../errors.js';

/** The identity vmctl's certificate names: file stem and role. */
export const OPERATOR = { id: 'operator', role: 'operator' } as const;

function truthy(v: string | undefined): boolean {
  return v !== undefined && ['1', 'true', 'yes', 'on'].includes(v.toLowerCase());
}

/**
 * vmctl's TLS material, or null for plaintext.
 *
 * @throws CliError `CLI_NO_CREDENTIALS` when no certificate is found (saying where to get
 *   one), or the files found are unusable (saying which and why)
 */
export function operatorTls(
  env: NodeJS.ProcessEnv,
  opts: { insecure?: boolean; cwd?: string } = {},
): TlsMaterial | null {
  const cwd = opts.cwd ?? process.cwd();
  if (opts.insecure === true || truthy(env.HANDOFF_INSECURE)) return null;
  const files = {
    'tls-cert': env.HANDOFF_TLS_CERT,
    'tls-key': env.HANDOFF_TLS_KEY,
    'tls-ca': env.HANDOFF_TLS_CA,
  };
  let dir = env.HANDOFF_TLS_DIR;
  const explicit = Object.values(files).some((v) => v !== undefined && v !== '');
  if (!explicit && (dir === undefined || dir === '')) {
    const local = resolve(cwd, env.HANDOFF_STATE_DIR ?? '.handoff', 'tls');
    if (!existsSync(join(local, 'operator.pem'))) {
      throw new CliError(
        'CLI_NO_CREDENTIALS',
        `vmctl has no operator certificate: none in ${local}, and HANDOFF_TLS_DIR is not set. ` +
          'Run vmctl in the folder where `npm start` runs (it creates .handoff/tls on its first ' +
          'start), or set HANDOFF_TLS_DIR to a folder with ca.pem, operator.pem and operator.key ' +
          '(or HANDOFF_TLS_CERT, HANDOFF_TLS_KEY and HANDOFF_TLS_CA); for a cluster started ' +
          'with --insecure, pass --insecure or set HANDOFF_INSECURE=1',
      );
    }
    dir = local;
  }
  try {
    return loadTls({ 'tls-dir': dir, ...files }, OPERATOR.id, OPERATOR);
  } catch (err) {
    throw new CliError(
      'CLI_NO_CREDENTIALS',
      `vmctl's operator certificate is unusable: ${(err as Error).message
        .replaceAll('--tls-dir', 'HANDOFF_TLS_DIR')
        .replaceAll('--tls-cert', 'HANDOFF_TLS_CERT')
        .replaceAll('--tls-key', 'HANDOFF_TLS_KEY')
        .replaceAll('--tls-ca', 'HANDOFF_TLS_CA')}`,
      undefined,
      { cause: err },
    );
  }
}
