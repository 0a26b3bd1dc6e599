import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { checkMaterial, loadTls } from './material.js';
import {
  CLUSTER_IDENTITIES,
  createCertificateAuthority,
  ensurePki,
  identityFiles,
  issueCertificate,
} from './pki.js';

const dirs: string[] = [];
function scratch(): string {
  const d = mkdtempSync(join(tmpdir(), 'handoff-pki-test-'));
  dirs.push(d);
  return d;
}
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

const mode = (p: string): number => statSync(p).mode & 0o777;

describe('ensurePki', () => {
  it('creates a CA and one ECDSA P-256 certificate per identity: CN = id, OU = role, loopback SANs, private files', async () => {
    const dir = join(scratch(), 'tls');
    const report = await ensurePki(dir);
    expect(report.createdCa).toBe(true);
    expect(report.issued).toEqual(CLUSTER_IDENTITIES.map((i) => i.id));
    expect(mode(dir)).toBe(0o700);
    expect(mode(join(dir, 'ca.key'))).toBe(0o600);
    const ca = new X509Certificate(readFileSync(join(dir, 'ca.pem')));
    expect(ca.ca).toBe(true);
    for (const { id, role } of CLUSTER_IDENTITIES) {
      const files = identityFiles(dir, id);
      expect(mode(files.key)).toBe(0o600);
      const cert = new X509Certificate(readFileSync(files.cert));
      expect(cert.subject.split('\n')).toEqual([`CN=${id}`, `OU=${role}`]);
      expect(cert.subjectAltName).toBe(
        'IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1, DNS:localhost',
      );
      expect(cert.publicKey.asymmetricKeyType).toBe('ec');
      expect(cert.publicKey.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
      expect(cert.ca).toBe(false);
      expect(cert.checkIssued(ca) && cert.verify(ca.publicKey)).toBe(true);
      expect(checkMaterial({ ...material(dir, id), files: files as never }, { role, id })).toEqual({
        id,
        role,
      });
    }
  });

  it('keeps what is usable on the next start and reissues what is not', async () => {
    const dir = join(scratch(), 'tls');
    await ensurePki(dir);
    const before = readFileSync(join(dir, 'vmm-a.pem'), 'utf8');
    writeFileSync(join(dir, 'vmm-b.pem'), 'garbage');
    const again = await ensurePki(dir, [...CLUSTER_IDENTITIES, { id: 'vmm-c', role: 'vmm' }]);
    expect(again.createdCa).toBe(false);
    expect(again.issued).toEqual(['vmm-b', 'vmm-c']);
    expect(readFileSync(join(dir, 'vmm-a.pem'), 'utf8')).toBe(before);
  });

  it('tightens a TLS directory others can enter', async () => {
    const dir = scratch();
    const { chmodSync } = await import('node:fs');
    chmodSync(dir, 0o755);
    await ensurePki(dir, [{ id: 'operator', role: 'operator' }]);
    expect(mode(dir)).toBe(0o700);
  });

  it('adds extra SANs and refuses ids that cannot be file names', async () => {
    const ca = await createCertificateAuthority();
    const pair = await issueCertificate(
      ca,
      { id: 'vmm-x', role: 'vmm' },
      { names: ['vmm-x.local', '10.0.0.7'] },
    );
    expect(new X509Certificate(pair.cert).subjectAltName).toContain('DNS:vmm-x.local');
    expect(new X509Certificate(pair.cert).subjectAltName).toContain('IP Address:10.0.0.7');
    await expect(issueCertificate(ca, { id: '../etc', role: 'vmm' })).rejects.toThrow(
      /cannot name/,
    );
    await expect(issueCertificate(ca, { id: 'x', role: 'admin' as never })).rejects.toThrow(
      /not a role/,
    );
  });
});

function material(dir: string, id: string) {
  const f = identityFiles(dir, id);
  return {
    ca: readFileSync(join(dir, 'ca.pem')),
    cert: readFileSync(f.cert),
    key: readFileSync(f.key),
  };
}

describe('loadTls', () => {
  it('reads --tls-dir by name, or the three files, and returns null for --insecure', async () => {
    const dir = join(scratch(), 'tls');
    await ensurePki(dir);
    const m = loadTls({ 'tls-dir': dir }, 'vmm-a', { role: 'vmm', id: 'vmm-a' })!;
    expect(m.identity).toEqual({ id: 'vmm-a', role: 'vmm' });
    const f = identityFiles(dir, 'memstore');
    const m2 = loadTls(
      { 'tls-ca': join(dir, 'ca.pem'), 'tls-cert': f.cert, 'tls-key': f.key },
      'whatever',
      { role: 'memstore' },
    )!;
    expect(m2.identity.id).toBe('memstore');
    expect(loadTls({ insecure: true }, 'memstore', { role: 'memstore' })).toBeNull();
  });

  it('refuses to run without certificates or --insecure, and says what to give', () => {
    expect(() => loadTls({}, 'memstore', { role: 'memstore' })).toThrow(
      /--tls-dir DIR.*--insecure/,
    );
    expect(() =>
      loadTls({ insecure: true, 'tls-dir': '/x' }, 'memstore', { role: 'memstore' }),
    ).toThrow(/both --insecure and TLS files/);
    expect(() => loadTls({ 'tls-dir': '/nonexistent' }, 'memstore', { role: 'memstore' })).toThrow(
      /cannot read the CA certificate \/nonexistent\/ca.pem/,
    );
  });

  it('refuses a certificate of another role, another id, another CA, or with the wrong key', async () => {
    const dir = join(scratch(), 'tls');
    await ensurePki(dir);
    const other = join(scratch(), 'other');
    await ensurePki(other, [{ id: 'vmm-a', role: 'vmm' }]);
    expect(() => loadTls({ 'tls-dir': dir }, 'operator', { role: 'vmm' })).toThrow(
      /role operator .* needs one of role vmm/,
    );
    expect(() =>
      loadTls(
        { 'tls-dir': dir, 'tls-cert': join(dir, 'vmm-b.pem'), 'tls-key': join(dir, 'vmm-b.key') },
        'vmm-a',
        {
          role: 'vmm',
          id: 'vmm-a',
        },
      ),
    ).toThrow(/names vmm-b, not vmm-a/);
    expect(() =>
      loadTls({ 'tls-dir': other, 'tls-ca': join(dir, 'ca.pem') }, 'vmm-a', { role: 'vmm' }),
    ).toThrow(/not issued by the CA/);
    expect(() =>
      loadTls({ 'tls-dir': dir, 'tls-key': join(dir, 'vmm-b.key') }, 'vmm-a', { role: 'vmm' }),
    ).toThrow(/is not the key of/);
  });

  it('refuses a certificate outside its validity period', async () => {
    const dir = join(scratch(), 'tls');
    await ensurePki(dir, [{ id: 'memstore', role: 'memstore' }]);
    const later = new Date(Date.now() + 400 * 24 * 3600 * 1000);
    expect(() => loadTls({ 'tls-dir': dir }, 'memstore', { role: 'memstore' }, later)).toThrow(
      /not now; issue a new one/,
    );
  });
});
