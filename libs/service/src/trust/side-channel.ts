/**
 * The trust of raw side channels (the vmm's data channel, memstore's page channel): plain
 * sockets beside gRPC that carry bulk bytes. Over TCP they are mutual TLS with the cluster's
 * certificates and admit only peers of one role; a unix socket stays plain (its file mode and
 * folder are the check). This module holds what both sides of every such channel share.
 *
 * @packageDocumentation
 */
import { X509Certificate } from 'node:crypto';
import * as tls from 'node:tls';
import type { Role } from './identity.js';
import { certificateIdentity, type TlsMaterial } from './material.js';

/** A side channel's address: `unix:/path`, or `host:port` (`[v6]:port` too); null if neither. */
export function parseSideChannelAddress(
  address: string,
): { path: string } | { host: string; port: number } | null {
  if (address.startsWith('unix:')) return { path: address.slice('unix:'.length) };
  const at = address.lastIndexOf(':');
  const port = Number(address.slice(at + 1));
  if (at <= 0 || !Number.isInteger(port) || port < 0 || port > 65535) return null;
  return { host: address.slice(0, at).replace(/^\[(.*)\]$/, '$1'), port };
}

/**
 * The server's TLS options: its certificate, and every client must present one the cluster CA
 * issued (TLS 1.3). Check the client's role on each connection with {@link peerOfRole}.
 */
export function sideChannelServerTls(material: TlsMaterial): tls.TlsOptions {
  return {
    ca: material.ca,
    cert: material.cert,
    key: material.key,
    requestCert: true,
    rejectUnauthorized: true,
    minVersion: 'TLSv1.3',
  };
}

/**
 * The client's TLS options: its certificate, trusting only the cluster CA and a server whose
 * certificate names the host and has role `role` (`what` names the channel in the refusal).
 */
export function sideChannelClientTls(
  material: TlsMaterial,
  role: Role,
  what: string,
): Pick<tls.ConnectionOptions, 'ca' | 'cert' | 'key' | 'minVersion' | 'checkServerIdentity'> {
  return {
    ca: material.ca,
    cert: material.cert,
    key: material.key,
    minVersion: 'TLSv1.3',
    checkServerIdentity: (host, cert) => {
      const err = tls.checkServerIdentity(host, cert);
      if (err !== undefined) return err;
      const ou = Array.isArray(cert.subject?.OU) ? cert.subject.OU[0] : cert.subject?.OU;
      return ou === role ? undefined : new Error(`the ${what} at ${host} is not a ${role}'s`);
    },
  };
}

/** The id of a verified TLS peer whose certificate has role `role`, or null. */
export function peerOfRole(socket: tls.TLSSocket, role: Role): string | null {
  if (!socket.authorized) return null;
  const raw = socket.getPeerCertificate().raw as Buffer | undefined;
  if (raw === undefined) return null;
  const identity = certificateIdentity(new X509Certificate(raw));
  return identity?.role === role ? identity.id : null;
}
