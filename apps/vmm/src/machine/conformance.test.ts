import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { runElfSync } from './run-sync.js';

const PREBUILT = fileURLToPath(
  new URL('../../../../guests/conformance/prebuilt/', import.meta.url),
);
const ELFS = readdirSync(PREBUILT)
  .filter((f) => f.endsWith('.elf'))
  .sort();

const QEMU = 'qemu-system-riscv32';
const QEMU_ARGS = ['-M', 'virt', '-bios', 'none', '-nographic'];
// s=off: no S-mode, like ours (QEMU would otherwise also want scounteren for U-mode counters).
const QEMU_CPU = 'rv32,f=off,d=off,c=off,h=off,s=off';
/** Guests that need QEMU's hart to have S-mode: the PLIC has hart 0's S-mode context only then. */
const QEMU_CPU_OF: Readonly<Record<string, string>> = {
  'plic.elf': 'rv32,f=off,d=off,c=off,h=off',
};
const qemuFound = spawnSync(QEMU, ['--version'], { encoding: 'utf8' }).status === 0;
if (!qemuFound) {
  console.log(
    `conformance: differential tests skipped: ${QEMU} is not on PATH (apt install qemu-system-misc)`,
  );
}

describe('conformance guests on Handoff', () => {
  it('finds the prebuilt ELFs', () => {
    expect(ELFS.length).toBeGreaterThanOrEqual(10);
  });

  it.each(ELFS)('%s passes', (name) => {
    const { output, exit, reason } = runElfSync(readFileSync(PREBUILT + name), {
      ramSize: 16 << 20,
    });
    const text = new TextDecoder().decode(output);
    expect(text).not.toMatch(/^FAIL/m);
    expect(reason).toBe('halted');
    expect(exit).toEqual({ kind: 'pass', code: 0 });
  });
});

describe.skipIf(!qemuFound)(`conformance guests on ${QEMU} (differential)`, () => {
  it.each(ELFS)(
    '%s prints the same bytes on QEMU and Handoff',
    (name) => {
      const path = PREBUILT + name;
      const cpu = QEMU_CPU_OF[name] ?? QEMU_CPU;
      const qemu = spawnSync(QEMU, [...QEMU_ARGS, '-cpu', cpu, '-kernel', path], {
        timeout: 60_000,
        killSignal: 'SIGKILL',
        maxBuffer: 16 << 20,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      expect(qemu.error, `QEMU did not finish: ${String(qemu.error)}`).toBeUndefined();
      expect(qemu.status, qemu.stderr.toString()).toBe(0);
      const ours = runElfSync(readFileSync(path), { ramSize: 16 << 20 });
      // QEMU exits on the finisher write without draining its UART chardev, so under load its
      // last newline can be missing; every byte before it must match exactly.
      const oursText = Buffer.from(ours.output).toString('latin1');
      const qemuText = qemu.stdout.toString('latin1');
      expect(oursText.replace(/\n$/, '')).toBe(qemuText.replace(/\n$/, ''));
    },
    90_000,
  );
});
