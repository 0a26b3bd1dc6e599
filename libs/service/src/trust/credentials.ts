/**
 * grpc-js credentials from a side's own TLS material (material.ts): a server that asks every
 * client for a certificate but lets one without a verified certificate connect (so health checks
 * work without one, and other calls get a clean UNAUTHENTICATED from the access check), and
 * clients that present their certificate and verify the server's against the cluster CA.
 *
 * @packageDocumentation
 */
import * as grpc from '@grpc/grpc-js';
import { checkServerIdentity, type PeerCertificate } from 'node:tls';
import type { Role } from './identity.js';
import type { TlsMaterial } from './material.js';

type CertificateProvider = grpc.experimental.CertificateProvider;
type CaListener = grpc.experimental.CaCertificateUpdateListener;
type IdentityListener = grpc.experimental.IdentityCertificateUpdateListener;

/**
 * A certificate provider for files read once: listeners get the material on the next microtask
 * (grpc-js registers its watcher only after it added the listeners, so a synchronous update
 * would never reach the server).
 */
class StaticCertificateProvider implements CertificateProvider {
  constructor(private readonly m: TlsMaterial) {}

  addCaCertificateListener(listener: CaListener): void {
    queueMicrotask(() => listener({ caCertificate: this.m.ca }));
  }

  removeCaCertificateListener(): void {}

  addIdentityCertificateListener(listener: IdentityListener): void {
    queueMicrotask(() => listener({ certificate: this.m.cert, privateKey: this.m.key }));
  }

  removeIdentityCertificateListener(): void {}
}

/**
 * Server credentials: plaintext for null (`--insecure`); else TLS with this side's certificate,
 * asking each client for one. A client without a certificate, or with one the CA did not issue,
 * still connects: its calls carry no identity (`peerIdentity` is null), so every call but
 * health is refused UNAUTHENTICATED by the access check (access.ts).
 */
export function serverCredentials(tls: TlsMaterial | null): grpc.ServerCredentials {
  if (tls === null) return grpc.ServerCredentials.createInsecure();
  const provider = new StaticCertificateProvider(tls);
  return grpc.experimental.createCertificateProviderServerCredentials(provider, provider, false);
}

/** Options of {@link channelCredentials}. */
export interface ChannelOptions {
  /**
   * The role the server's certificate must name (its OU): a vmm then talks only to a memstore
   * that is one, not to any holder of a cluster certificate listening at the address.
   */
  readonly serverRole?: Role;
}

/**
 * Client credentials: plaintext for null (`--insecure`); else TLS presenting this side's
 * certificate, trusting only the cluster CA, and checking that the server's certificate names
 * the address dialled (its SANs) and, with `serverRole`, that role.
 */
export function channelCredentials(
  tls: TlsMaterial | null,
  opts: ChannelOptions = {},
): grpc.ChannelCredentials {
  if (tls === null) return grpc.credentials.createInsecure();
  dropIpServernameWarning();
  const role = opts.serverRole;
  return grpc.credentials.createSsl(tls.ca, tls.key, tls.cert, {
    checkServerIdentity: (host: string, cert: PeerCertificate) => {
      const err = checkServerIdentity(host, cert);
      if (err !== undefined) return err;
      if (role !== undefined && !ouIncludes(cert.subject?.OU, role)) {
        return new Error(
          `the server at ${host} presented a certificate of ${String(cert.subject?.OU)} ` +
            `${String(cert.subject?.CN)}, not of a ${role}`,
        );
      }
      return undefined;
    },
  });
}

function ouIncludes(ou: string | string[] | undefined, role: Role): boolean {
  return Array.isArray(ou) ? ou[0] === role : ou === role;
}

let warningFiltered = false;

/**
 * grpc-js sends the dialled host as the TLS server name, an IP address for the cluster's
 * loopback addresses, and Node warns once per process that this is deprecated (DEP0123: it
 * will ignore such names). The server's certificate is still checked against the IP (its SANs),
 * so the warning says nothing to a Handoff operator: this drops it and passes every other one.
 */
function dropIpServernameWarning(): void {
  if (warningFiltered) return;
  warningFiltered = true;
  const emit = process.emitWarning.bind(process) as (...args: unknown[]) => void;
  process.emitWarning = ((warning: unknown, ...rest: unknown[]) => {
    const code =
      typeof rest[0] === 'object' && rest[0] !== null
        ? (rest[0] as { code?: string }).code
        : rest[1];
    if (code === 'DEP0123') return;
    emit(warning, ...rest);
  }) as typeof process.emitWarning;
}
