/**
 * A cluster's PKI: a local certificate authority and one certificate per identity, as PEM files
 * in one directory. ECDSA P-256 keys, signed with SHA-256; a certificate's subject names its
 * holder's id in the CN and its role in the OU (`CN=vmm-a, OU=vmm`, identity.ts); its SANs are
 * the loopback addresses and `localhost`, plus any extra names given.
 *
 * Files, in `dir` (mode 0700; keys 0600, certificates 0644):
 * - `ca.pem`, `ca.key`: the CA (whoever has `ca.key` can issue certificates: in a real
 *   deployment keep it elsewhere and hand each service only `ca.pem` and its own pair);
 * - `<id>.pem`, `<id>.key`: an identity's certificate and key (PKCS #8).
 *
 * Certificates are made with `@peculiar/x509` over Node's WebCrypto, so creating a PKI needs no
 * `openssl` binary. This module is an entry of its own (`@handoff/service/pki`): services only
 * read the files and never load it.
 *
 * @packageDocumentation
 */
import 'reflect-metadata'; // @peculiar/x509's dependency injection needs the Reflect polyfill
import * as x509 from '@peculiar/x509';
import { randomBytes, webcrypto, X509Certificate } from 'node:crypto';
import { chmodSync, existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { ServiceError } from '../errors.js';
import { ROLES, type PeerIdentity } from './identity.js';
import { certificateIdentity } from './material.js';
import { ensurePrivateDirectory } from './private-dir.js';

type CryptoKey = webcrypto.CryptoKey;

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

const ALGORITHM = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
const DAY_MS = 24 * 60 * 60 * 1000;

/** File name of the CA certificate in a TLS directory. */
export const CA_CERT_FILE = 'ca.pem';
/** File name of the CA key in a TLS directory. */
export const CA_KEY_FILE = 'ca.key';

/** How long a CA stays valid (days). */
export const CA_VALID_DAYS = 3650;
/** How long an identity's certificate stays valid (days). */
export const CERT_VALID_DAYS = 365;
/** {@link ensurePki} issues a certificate again when it expires within this many days. */
export const RENEW_BEFORE_DAYS = 14;

/** The identities of the local cluster: its services, two vmm instances and the operator. */
export const CLUSTER_IDENTITIES: readonly PeerIdentity[] = [
  { id: 'memstore', role: 'memstore' },
  { id: 'migrator', role: 'migrator' },
  { id: 'vmm-a', role: 'vmm' },
  { id: 'vmm-b', role: 'vmm' },
  { id: 'operator', role: 'operator' },
];

/**
 * The identities the second host of the local cluster (`npm start -- --hosts 2`) adds: its
 * memstore and its vmm instance.
 */
export const SECOND_HOST_IDENTITIES: readonly PeerIdentity[] = [
  { id: 'memstore-2', role: 'memstore' },
  { id: 'vmm-c', role: 'vmm' },
];

/** The SANs every certificate carries: loopback over IPv4 and IPv6, and `localhost`. */
export const DEFAULT_NAMES: readonly string[] = ['127.0.0.1', '::1', 'localhost'];

/** A certificate and its private key, both PEM. */
export interface PemPair {
  readonly cert: string;
  readonly key: string;
}

/** What {@link ensurePki} did. */
export interface PkiReport {
  readonly dir: string;
  /** True when it created the CA (a new PKI). */
  readonly createdCa: boolean;
  /** Ids whose certificate it issued now (new, expiring, or from another CA). */
  readonly issued: readonly string[];
}

/** Options of certificate issuance. */
export interface IssueOptions {
  /** Extra SANs beside {@link DEFAULT_NAMES}: host names or IP addresses. */
  readonly names?: readonly string[];
  /** Validity in days (default {@link CERT_VALID_DAYS}). */
  readonly validDays?: number;
  /** The clock (tests). */
  readonly now?: Date;
}

/** Ids become file names: lower-case letters, digits, dashes, dots (not leading). */
const ID_PATTERN = /^[a-z0-9][a-z0-9.-]{0,62}$/;

function checkIdentity(identity: PeerIdentity): void {
  if (!ID_PATTERN.test(identity.id)) {
    throw new ServiceError(
      'SERVICE_INVALID_ARGUMENT',
      `"${identity.id}" cannot name a certificate: use lower-case letters, digits, dots and ` +
        'dashes (at most 63, not starting with a dot or dash)',
    );
  }
  if (!(ROLES as readonly string[]).includes(identity.role)) {
    throw new ServiceError(
      'SERVICE_INVALID_ARGUMENT',
      `"${String(identity.role)}" is not a role; use one of ${ROLES.join(', ')}`,
    );
  }
}

/** A positive random serial number (16 bytes, high bit clear), as hex. */
function serial(): string {
  const b = randomBytes(16);
  b[0] = b[0]! & 0x7f;
  return b.toString('hex');
}

async function exportKey(key: CryptoKey): Promise<string> {
  const der = await webcrypto.subtle.exportKey('pkcs8', key);
  return x509.PemConverter.encode(der, 'PRIVATE KEY');
}

async function importKey(pem: string): Promise<CryptoKey> {
  return webcrypto.subtle.importKey('pkcs8', x509.PemConverter.decodeFirst(pem), ALGORITHM, false, [
    'sign',
  ]);
}

/** A new self-signed CA (`CN=<name>`), valid for `validDays`. */
export async function createCertificateAuthority(
  opts: { name?: string; validDays?: number; now?: Date } = {},
): Promise<PemPair> {
  const now = opts.now ?? new Date();
  const keys = await webcrypto.subtle.generateKey(ALGORITHM, true, ['sign', 'verify']);
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: new x509.Name([{ CN: [opts.name ?? 'Handoff local CA'] }]),
    notBefore: new Date(now.getTime() - 60_000),
    notAfter: new Date(now.getTime() + (opts.validDays ?? CA_VALID_DAYS) * DAY_MS),
    keys,
    signingAlgorithm: ALGORITHM,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(
        x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign,
        true,
      ),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { cert: cert.toString('pem'), key: await exportKey(keys.privateKey) };
}

/**
 * Issues a certificate for `identity` signed by `ca`: subject `CN=<id>, OU=<role>`, usable as
 * TLS server and client (every service is both), SANs {@link DEFAULT_NAMES} plus `names`.
 */
export async function issueCertificate(
  ca: PemPair,
  identity: PeerIdentity,
  opts: IssueOptions = {},
): Promise<PemPair> {
  checkIdentity(identity);
  const now = opts.now ?? new Date();
  const caCert = new x509.X509Certificate(ca.cert);
  const keys = await webcrypto.subtle.generateKey(ALGORITHM, true, ['sign', 'verify']);
  const names = [...new Set([...DEFAULT_NAMES, ...(opts.names ?? [])])];
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: new x509.Name([{ CN: [identity.id] }, { OU: [identity.role] }]),
    issuer: caCert.subjectName,
    notBefore: new Date(now.getTime() - 60_000),
    notAfter: new Date(now.getTime() + (opts.validDays ?? CERT_VALID_DAYS) * DAY_MS),
    signingKey: await importKey(ca.key),
    publicKey: keys.publicKey,
    signingAlgorithm: ALGORITHM,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([
        x509.ExtendedKeyUsage.serverAuth,
        x509.ExtendedKeyUsage.clientAuth,
      ]),
      new x509.SubjectAlternativeNameExtension(
        names.map((n) => (isIP(n) !== 0 ? { type: 'ip', value: n } : { type: 'dns', value: n })),
      ),
      await x509.AuthorityKeyIdentifierExtension.create(caCert),
    ],
  });
  return { cert: cert.toString('pem'), key: await exportKey(keys.privateKey) };
}

/** Writes a file atomically (temporary name, then rename) with `mode`. */
function writeAtomic(path: string, text: string, mode: number): void {
  const tmp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  writeFileSync(tmp, text, { mode, flag: 'wx' });
  chmodSync(tmp, mode); // the umask may have taken bits off
  renameSync(tmp, path);
}

/** Paths of an identity's files in a TLS directory. */
export function identityFiles(dir: string, id: string): { cert: string; key: string } {
  return { cert: join(dir, `${id}.pem`), key: join(dir, `${id}.key`) };
}

/** Reads the CA of a TLS directory. @throws ServiceError `SERVICE_INVALID_CONFIG` when missing */
export function readCertificateAuthority(dir: string): PemPair {
  const cert = join(dir, CA_CERT_FILE);
  const key = join(dir, CA_KEY_FILE);
  if (!existsSync(cert) || !existsSync(key)) {
    throw new ServiceError(
      'SERVICE_INVALID_CONFIG',
      `${dir} holds no CA (${CA_CERT_FILE} and ${CA_KEY_FILE}); create one with ensurePki ` +
        '(`npm start` does on its first start)',
    );
  }
  return { cert: readFileSync(cert, 'utf8'), key: readFileSync(key, 'utf8') };
}

/** Writes an identity's pair into `dir` (key 0600 first, then the certificate 0644). */
export function writeIdentity(dir: string, id: string, pair: PemPair): void {
  const files = identityFiles(dir, id);
  writeAtomic(files.key, pair.key, 0o600);
  writeAtomic(files.cert, pair.cert, 0o644);
}

/**
 * True when `identity`'s certificate in `dir` exists with its key, names that identity, was
 * issued by `caPem` and stays valid for {@link RENEW_BEFORE_DAYS} more days after `now`.
 */
function usable(dir: string, identity: PeerIdentity, caPem: string, now: Date): boolean {
  const files = identityFiles(dir, identity.id);
  if (!existsSync(files.cert) || !existsSync(files.key)) return false;
  try {
    const cert = new X509Certificate(readFileSync(files.cert));
    const ca = new X509Certificate(caPem);
    const named = certificateIdentity(cert);
    const renewAt = now.getTime() + RENEW_BEFORE_DAYS * DAY_MS;
    return (
      named?.id === identity.id &&
      named.role === identity.role &&
      cert.checkIssued(ca) &&
      cert.verify(ca.publicKey) &&
      Date.parse(cert.validTo) > renewAt
    );
  } catch {
    return false;
  }
}

/**
 * Makes `dir` a PKI holding `identities`: creates the directory (0700) and the CA when missing,
 * and issues the certificate of every identity that has none, or one that expires within
 * {@link RENEW_BEFORE_DAYS} days or comes from another CA. Existing usable files are kept, so
 * calling it on every start is cheap and keeps certificates handed out earlier valid.
 */
export async function ensurePki(
  dir: string,
  identities: readonly PeerIdentity[] = CLUSTER_IDENTITIES,
  opts: IssueOptions = {},
): Promise<PkiReport> {
  for (const i of identities) checkIdentity(i);
  ensurePrivateDirectory(dir, 'TLS directory');
  const now = opts.now ?? new Date();
  let createdCa = false;
  let ca: PemPair;
  const caPath = join(dir, CA_CERT_FILE);
  const caKeyPath = join(dir, CA_KEY_FILE);
  const renewAt = now.getTime() + RENEW_BEFORE_DAYS * DAY_MS;
  const caValid =
    existsSync(caPath) &&
    existsSync(caKeyPath) &&
    Date.parse(new X509Certificate(readFileSync(caPath)).validTo) > renewAt;
  if (caValid) {
    ca = readCertificateAuthority(dir);
  } else {
    ca = await createCertificateAuthority({ now });
    writeAtomic(caKeyPath, ca.key, 0o600);
    writeAtomic(caPath, ca.cert, 0o644);
    createdCa = true;
  }
  const issued: string[] = [];
  for (const identity of identities) {
    if (!createdCa && usable(dir, identity, ca.cert, now)) continue;
    writeIdentity(dir, identity.id, await issueCertificate(ca, identity, opts));
    issued.push(identity.id);
  }
  return { dir, createdCa, issued };
}
