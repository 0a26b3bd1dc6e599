import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensurePki } from '@handoff/service/pki';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { operatorTls } from './credentials.js';

describe("vmctl's operator certificate", () => {
  let cwd: string;
  beforeAll(async () => {
    cwd = mkdtempSync(join(tmpdir(), 'handoff-vmctl-tls-'));
    await ensurePki(join(cwd, '.handoff', 'tls'), [{ id: 'operator', role: 'operator' }]);
    await ensurePki(join(cwd, 'elsewhere'), [{ id: 'operator', role: 'operator' }]);
  });
  afterAll(() => rmSync(cwd, { recursive: true, force: true }));

  it('comes from ./.handoff/tls of the local cluster, or HANDOFF_TLS_DIR, or the three files', () => {
    expect(operatorTls({}, { cwd })?.files.cert).toBe(join(cwd, '.handoff/tls/operator.pem'));
    const dir = join(cwd, 'elsewhere');
    expect(operatorTls({ HANDOFF_TLS_DIR: dir }, { cwd })?.files.cert).toBe(
      join(dir, 'operator.pem'),
    );
    const files = {
      HANDOFF_TLS_CA: join(dir, 'ca.pem'),
      HANDOFF_TLS_CERT: join(dir, 'operator.pem'),
      HANDOFF_TLS_KEY: join(dir, 'operator.key'),
    };
    expect(operatorTls(files, { cwd: tmpdir() })?.identity).toEqual({
      id: 'operator',
      role: 'operator',
    });
    // The launcher's --state-dir, when not ./.handoff
    const stateDir = join(cwd, '.handoff');
    expect(operatorTls({ HANDOFF_STATE_DIR: stateDir }, { cwd: tmpdir() })?.files.key).toBe(
      join(stateDir, 'tls/operator.key'),
    );
  });

  it('is none with --insecure or HANDOFF_INSECURE=1', () => {
    expect(operatorTls({}, { cwd, insecure: true })).toBeNull();
    expect(operatorTls({ HANDOFF_INSECURE: '1' }, { cwd })).toBeNull();
  });

  it('when missing or unusable, says where to get one', () => {
    const empty = mkdtempSync(join(tmpdir(), 'handoff-vmctl-none-'));
    try {
      expect(() => operatorTls({}, { cwd: empty })).toThrow(
        expect.objectContaining({
          code: 'CLI_NO_CREDENTIALS',
          message: expect.stringMatching(
            /no operator certificate: none in .*npm start.*--insecure/s,
          ),
        }),
      );
      expect(() => operatorTls({ HANDOFF_TLS_DIR: empty }, { cwd })).toThrow(
        /operator certificate is unusable: cannot read the CA certificate .* HANDOFF_TLS_CA or HANDOFF_TLS_DIR/,
      );
    } finally {
      rmSync(empty, { recursive: true, force: true });
    }
  });
});
