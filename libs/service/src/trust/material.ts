/**
 * A service's or client's own TLS material: the cluster's CA, its certificate and key, read from
 * the files its configuration names (`--tls-dir`, or `--tls-ca/--tls-cert/--tls-key`), checked
 * (the certificate names an identity, was issued by the CA, matches the key, is in its validity
 * period) and tied to the identity it must prove. `--insecure` instead runs plaintext; giving
 * neither is refused, so nothing serves plaintext by accident.
 *
 * @packageDocumentation
 */
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ConfigSpec } from '../config.js';
import { ServiceError } from '../errors.js';
import { ROLES, type PeerIdentity, type Role } from './identity.js';

/** A verified set of TLS files: the CA, an identity's certificate and key. */
export interface TlsMaterial {
  /** PEM of the CA that issues the cluster's certificates (and verifies peers). */
  readonly ca: Buffer;
  /** PEM of this side's certificate. */
  readonly cert: Buffer;
  /** PEM of this side's private key. */
  readonly key: Buffer;
  /** Who the certificate says this side is. */
  readonly identity: PeerIdentity;
  /** Where the files were read from (for messages). */
  readonly files: { readonly ca: string; readonly cert: string; readonly key: string };
}

/** The TLS options of every service (part of `commonOptions`). */
export function tlsOptions() {
  return {
    'tls-dir': {
      type: 'string',
      description:
        'directory of the TLS files: ca.pem, <name>.pem and <name>.key, where <name> is the ' +
        "service's name (memstore, migrator) or a vmm's --id; `npm start` creates one in .handoff/tls",
    },
    'tls-ca': {
      type: 'string',
      description: 'PEM file of the cluster CA (default: <tls-dir>/ca.pem)',
    },
    'tls-cert': {
      type: 'string',
      description: "PEM file of this service's certificate (default: <tls-dir>/<name>.pem)",
    },
    'tls-key': {
      type: 'string',
      description: "PEM file of this service's private key (default: <tls-dir>/<name>.key)",
    },
    insecure: {
      type: 'boolean',
      default: false,
      description:
        'serve and call plaintext, without certificates: any local process may then call every RPC',
    },
  } as const satisfies ConfigSpec;
}

/** The TLS part of a parsed configuration. */
export interface TlsConfig {
  readonly 'tls-dir'?: string | undefined;
  readonly 'tls-ca'?: string | undefined;
  readonly 'tls-cert'?: string | undefined;
  readonly 'tls-key'?: string | undefined;
  readonly insecure?: boolean | undefined;
}

/** What the loaded certificate must name. */
export interface ExpectedIdentity {
  readonly role: Role;
  /** The id (CN) it must name, when fixed (a vmm's `--id`). */
  readonly id?: string;
}

function firstLine(dn: string, key: string): string | undefined {
  for (const line of dn.split('\n')) {
    const at = line.indexOf('=');
    if (at > 0 && line.slice(0, at) === key) return line.slice(at + 1);
  }
  return undefined;
}

/**
 * The identity a certificate names (CN = id, OU = role), or null when it names no id or no
 * known role. Says nothing about whether the certificate is trusted.
 */
export function certificateIdentity(cert: X509Certificate): PeerIdentity | null {
  const id = firstLine(cert.subject, 'CN');
  const role = firstLine(cert.subject, 'OU');
  if (id === undefined || id === '' || role === undefined) return null;
  if (!(ROLES as readonly string[]).includes(role)) return null;
  return { id, role: role as Role };
}

function invalid(message: string, cause?: unknown): ServiceError {
  return new ServiceError('SERVICE_INVALID_CONFIG', message, { cause });
}

function readPem(path: string, what: string, flag: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw invalid(
      `cannot read the ${what} ${path} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}); ` +
        `give the right file with ${flag}`,
      err,
    );
  }
}

/**
 * Reads and checks the TLS material `config` names for `name` (the file stem in `--tls-dir`),
 * or returns null for `--insecure`.
 *
 * @throws ServiceError `SERVICE_INVALID_CONFIG` when neither certificates nor `--insecure` are
 *   given, when both are, when a file is missing or unreadable, when the certificate does not
 *   name `expect`'s role (and id), was not issued by the CA, does not match the key, or is
 *   outside its validity period; each message says what to give instead
 */
export function loadTls(
  config: TlsConfig,
  name: string,
  expect: ExpectedIdentity,
  now: Date = new Date(),
): TlsMaterial | null {
  const dir = config['tls-dir'];
  const given = [config['tls-dir'], config['tls-ca'], config['tls-cert'], config['tls-key']].some(
    (v) => v !== undefined && v !== '',
  );
  if (config.insecure === true) {
    if (given) {
      throw invalid(
        'both --insecure and TLS files are given; drop --insecure to use the certificates, ' +
          'or the --tls-* options to run plaintext',
      );
    }
    return null;
  }
  if (!given) {
    throw invalid(
      `${name} has no certificate: give --tls-dir DIR (holding ca.pem, ${name}.pem and ` +
        `${name}.key; \`npm start\` creates them in .handoff/tls) or --tls-ca, --tls-cert and ` +
        '--tls-key, or --insecure to run plaintext (then any local process may call every RPC)',
    );
  }
  const pick = (flag: 'tls-ca' | 'tls-cert' | 'tls-key', file: string): string => {
    const v = config[flag];
    if (v !== undefined && v !== '') return v;
    if (dir === undefined || dir === '') {
      throw invalid(`--${flag} is missing; give it, or --tls-dir for all three files`);
    }
    return join(dir, file);
  };
  const files = {
    ca: pick('tls-ca', 'ca.pem'),
    cert: pick('tls-cert', `${name}.pem`),
    key: pick('tls-key', `${name}.key`),
  };
  const ca = readPem(files.ca, 'CA certificate', '--tls-ca or --tls-dir');
  const cert = readPem(files.cert, 'certificate', '--tls-cert or --tls-dir');
  const key = readPem(files.key, 'private key', '--tls-key or --tls-dir');
  const identity = checkMaterial({ ca, cert, key, files }, expect, now);
  return { ca, cert, key, identity, files };
}

/**
 * Checks that a certificate names `expect`, was issued by the CA, matches the key and is valid
 * at `now`; returns the identity it names.
 *
 * @throws ServiceError `SERVICE_INVALID_CONFIG` naming the file and what is wrong
 */
export function checkMaterial(
  m: Pick<TlsMaterial, 'ca' | 'cert' | 'key' | 'files'>,
  expect: ExpectedIdentity,
  now: Date = new Date(),
): PeerIdentity {
  let ca: X509Certificate;
  let cert: X509Certificate;
  try {
    ca = new X509Certificate(m.ca);
  } catch (err) {
    throw invalid(`${m.files.ca} is not a PEM certificate; give the cluster's ca.pem`, err);
  }
  try {
    cert = new X509Certificate(m.cert);
  } catch (err) {
    throw invalid(`${m.files.cert} is not a PEM certificate`, err);
  }
  const identity = certificateIdentity(cert);
  if (identity === null) {
    throw invalid(
      `${m.files.cert} names no Handoff identity (subject ${cert.subject.replaceAll('\n', ', ')}); ` +
        `it needs CN=<id> and OU=<role>, role one of ${ROLES.join(', ')}`,
    );
  }
  if (identity.role !== expect.role) {
    throw invalid(
      `${m.files.cert} is a certificate of role ${identity.role} (${identity.id}); this side ` +
        `needs one of role ${expect.role}`,
    );
  }
  if (expect.id !== undefined && identity.id !== expect.id) {
    throw invalid(
      `${m.files.cert} names ${identity.id}, not ${expect.id}: an instance's id must be the CN ` +
        'of its certificate; give the certificate issued for this id, or start it with that id',
    );
  }
  if (!cert.checkIssued(ca) || !cert.verify(ca.publicKey)) {
    throw invalid(`${m.files.cert} was not issued by the CA in ${m.files.ca}; give matching files`);
  }
  if (Date.parse(cert.validFrom) > now.getTime() || Date.parse(cert.validTo) < now.getTime()) {
    throw invalid(
      `${m.files.cert} is valid from ${cert.validFrom} to ${cert.validTo}, not now; issue a new ` +
        "one (`npm start` renews the local cluster's certificates)",
    );
  }
  let matches = false;
  try {
    matches = cert.checkPrivateKey(createPrivateKey(m.key));
  } catch (err) {
    throw invalid(`${m.files.key} is not a PEM private key`, err);
  }
  if (!matches) {
    throw invalid(`${m.files.key} is not the key of ${m.files.cert}; give the matching pair`);
  }
  return identity;
}
