import { rmSync } from 'node:fs';
import { createTestPki, TEST_PKI_ENV } from '@handoff/service/testing';

/**
 * vitest globalSetup: one test PKI (a CA and the usual identities' certificates) per run, in a
 * temporary folder named by {@link TEST_PKI_ENV} for the test processes (set before they start,
 * so they inherit it); certificates for other ids are issued from it on demand. Removed after
 * the run.
 */
export default async function setup(): Promise<() => void> {
  const dir = await createTestPki();
  process.env[TEST_PKI_ENV] = dir;
  return () => rmSync(dir, { recursive: true, force: true });
}
