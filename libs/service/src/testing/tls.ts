/**
 * TLS for tests: one test PKI per run (the vitest globalSetup, test/support/tls-setup.ts,
 * creates it and names it in {@link TEST_PKI_ENV}; a process without it creates its own once),
 * certificates for any id on demand, and the material and credentials built from them.
 *
 * @packageDocumentation
 */
import type * as grpc from '@grpc/grpc-js';
import { copyFileSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AccessTable } from '../trust/access.js';
import { channelCredentials, type ChannelOptions } from '../trust/credentials.js';
import { ROLES, type PeerIdentity, type Role } from '../trust/identity.js';
import { loadTls, type TlsMaterial } from '../trust/material.js';
import {
  CA_CERT_FILE,
  CLUSTER_IDENTITIES,
  ensurePki,
  identityFiles,
  issueCertificate,
  readCertificateAuthority,
  writeIdentity,
} from '../trust/pki.js';

/** The variable that names the run's test PKI directory (set by the vitest globalSetup). */
export const TEST_PKI_ENV = 'HANDOFF_TEST_PKI';

/**
 * Identities the test PKI holds from the start: the local cluster's, and the ids tests use for
 * clients that play a role (`test-vmm` for a memstore client that takes leases, `test-migrator`
 * for a vmm client that drives migrations, `vmm-x` for a hand-made migration stream).
 */
export const TEST_IDENTITIES: readonly PeerIdentity[] = [
  ...CLUSTER_IDENTITIES,
  { id: 'test-vmm', role: 'vmm' },
  { id: 'test-migrator', role: 'migrator' },
  { id: 'test-memstore', role: 'memstore' },
  { id: 'vmm-x', role: 'vmm' },
];

/** Creates a PKI with {@link TEST_IDENTITIES} in a new temporary directory; returns it. */
export async function createTestPki(prefix = 'handoff-test-pki-'): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  await ensurePki(dir, TEST_IDENTITIES);
  return dir;
}

let ownPki: Promise<string> | undefined;

/** The run's test PKI directory (the globalSetup's, else one of this process's own). */
export function testPkiDir(): Promise<string> {
  const fromEnv = process.env[TEST_PKI_ENV];
  if (fromEnv !== undefined && fromEnv !== '' && existsSync(join(fromEnv, CA_CERT_FILE))) {
    return Promise.resolve(fromEnv);
  }
  ownPki ??= createTestPki().then((dir) => {
    process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
    return dir;
  });
  return ownPki;
}

const issued = new Map<string, Promise<string>>();

/**
 * A TLS directory holding `ca.pem`, `<id>.pem` and `<id>.key` for `identity`: the run's PKI
 * itself when it holds that identity, else a fresh directory (one per id and process) with a
 * certificate issued now by the run's CA.
 */
export function testTlsDir(identity: PeerIdentity): Promise<string> {
  const key = `${identity.role}/${identity.id}`;
  let dir = issued.get(key);
  if (dir === undefined) {
    dir = (async () => {
      const pki = await testPkiDir();
      const known = TEST_IDENTITIES.find((i) => i.id === identity.id);
      if (known !== undefined && known.role === identity.role) return pki;
      const own = mkdtempSync(join(pki, `${identity.id}-`));
      copyFileSync(join(pki, CA_CERT_FILE), join(own, CA_CERT_FILE));
      writeIdentity(
        own,
        identity.id,
        await issueCertificate(readCertificateAuthority(pki), identity),
      );
      return own;
    })();
    issued.set(key, dir);
  }
  return dir;
}

/** The flags that give a service the certificate of `identity` (`--tls-dir DIR`). */
export async function testTlsArgs(identity: PeerIdentity): Promise<string[]> {
  return ['--tls-dir', await testTlsDir(identity)];
}

/** The loaded material of `identity` (see {@link testTlsDir}). */
export async function testMaterial(identity: PeerIdentity): Promise<TlsMaterial> {
  const dir = await testTlsDir(identity);
  return loadTls({ 'tls-dir': dir }, identity.id, identity)!;
}

/**
 * Client credentials presenting the certificate of `identity`, one of {@link TEST_IDENTITIES},
 * from the PKI the run's globalSetup created, without waiting.
 *
 * @throws Error outside such a run, or for an identity the PKI does not hold from the start
 */
export function testCredentialsSync(
  identity: PeerIdentity,
  opts: ChannelOptions = {},
): grpc.ChannelCredentials {
  const dir = process.env[TEST_PKI_ENV];
  const known = TEST_IDENTITIES.some((i) => i.id === identity.id && i.role === identity.role);
  if (dir === undefined || dir === '' || !known) {
    throw new Error(
      `no test certificate of ${identity.role} ${identity.id} is ready; use testCredentials ` +
        `(async), or run under vitest, whose globalSetup creates the PKI (${TEST_PKI_ENV})`,
    );
  }
  return channelCredentials(loadTls({ 'tls-dir': dir }, identity.id, identity), opts);
}

/** Client credentials presenting `identity`'s certificate. */
export async function testCredentials(
  identity: PeerIdentity,
  opts: ChannelOptions = {},
): Promise<grpc.ChannelCredentials> {
  return channelCredentials(await testMaterial(identity), opts);
}

/** Paths of `identity`'s certificate and key (see {@link testTlsDir}). */
export async function testIdentityFiles(
  identity: PeerIdentity,
): Promise<{ ca: string; cert: string; key: string }> {
  const dir = await testTlsDir(identity);
  return { ca: join(dir, CA_CERT_FILE), ...identityFiles(dir, identity.id) };
}

/** An access table that lets `roles` (default: all) call every method of `definition`. */
export function openAccess(
  definition: grpc.ServiceDefinition,
  roles: readonly Role[] = ROLES,
): AccessTable {
  return Object.fromEntries(
    Object.values(definition).map((a) => {
      const path = (a as { path: string }).path;
      return [path.slice(path.lastIndexOf('/') + 1), roles];
    }),
  );
}
