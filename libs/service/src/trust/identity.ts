/**
 * Who is calling: the identity a caller's client certificate names, and the role checks every
 * service runs on it. A certificate names its holder's id in the subject's CN and its role in
 * the subject's OU (`CN=vmm-a, OU=vmm`); only certificates that verified against the cluster's
 * CA during the TLS handshake count.
 *
 * @packageDocumentation
 */
import type { PeerCertificate } from 'node:tls';
import { ServiceError } from '../errors.js';

/** The roles of a Handoff cluster: its three services and the operator (`vmctl`). */
export const ROLES = ['vmm', 'migrator', 'memstore', 'operator'] as const;

/** One of {@link ROLES}. */
export type Role = (typeof ROLES)[number];

/** A verified caller: the id and role its certificate names. */
export interface PeerIdentity {
  readonly role: Role;
  /** The CN: `vmm-a`, `migrator`, `memstore`, `operator`, … */
  readonly id: string;
}

/**
 * The caller of a server call. `secure: false` when the server runs with `--insecure` (no TLS):
 * then nobody is authenticated and role checks pass; a secure server always has an identity,
 * since a call without a verified certificate is refused before it reaches a handler.
 */
export type Caller =
  { readonly secure: true; readonly identity: PeerIdentity } | { readonly secure: false };

/** The caller of a plaintext server. */
export const INSECURE_CALLER: Caller = Object.freeze({ secure: false });

/** Anything that exposes grpc-js's auth context (every server call object does). */
export interface HasAuthContext {
  getAuthContext(): { transportSecurityType?: string; sslPeerCertificate?: PeerCertificate } | null;
}

function isRole(s: string): s is Role {
  return (ROLES as readonly string[]).includes(s);
}

function firstOf(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

/**
 * The verified identity of a call's peer, or null when the call came over plaintext, or over TLS
 * without a certificate that verified against the CA, or with one that names no known role.
 */
export function peerIdentity(call: HasAuthContext): PeerIdentity | null {
  const ctx = call.getAuthContext();
  const cert = ctx?.sslPeerCertificate;
  if (ctx?.transportSecurityType !== 'ssl' || cert === undefined) return null;
  const id = firstOf(cert.subject?.CN);
  const role = firstOf(cert.subject?.OU);
  if (id === undefined || id === '' || role === undefined || !isRole(role)) return null;
  return { role, id };
}

/**
 * Checks that `caller` may do `what`: any of `roles`. Throws `SERVICE_UNAUTHENTICATED` for a
 * secure call without an identity and `SERVICE_PERMISSION_DENIED` for a wrong role; a plaintext
 * (`--insecure`) caller always passes.
 */
export function requireRole(caller: Caller | null, roles: readonly Role[], what: string): void {
  if (caller === null) {
    throw new ServiceError(
      'SERVICE_UNAUTHENTICATED',
      `${what} needs a client certificate signed by the cluster's CA; give vmctl one with ` +
        'HANDOFF_TLS_DIR (or HANDOFF_TLS_CERT, HANDOFF_TLS_KEY, HANDOFF_TLS_CA), a service ' +
        'with --tls-dir',
    );
  }
  if (!caller.secure) return;
  if (!roles.includes(caller.identity.role)) {
    throw new ServiceError(
      'SERVICE_PERMISSION_DENIED',
      `${what} is not allowed for ${caller.identity.role} ${caller.identity.id}; ` +
        `it needs the role ${roles.join(' or ')}`,
    );
  }
}
