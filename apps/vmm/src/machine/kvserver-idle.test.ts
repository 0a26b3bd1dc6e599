/**
 * The committed kvserver guest waits for requests asleep in WFI with only the UART's receive
 * interrupt enabled: the host may sleep with no deadline (`wakeDelayMs() === Infinity`), and a
 * request handed to the UART the way the vCPU thread does it (`uart.receive`, `cpu.wake`) is
 * answered by the next runs. Real time, as VMs run.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

import { describe, expect, it } from 'vitest';

import { MIP_MEIP } from '../cpu/arch.js';
import type { StopReason } from '../cpu/hart.js';
import { createMachine, type Machine } from './machine.js';

const KVSERVER = readFileSync(
  fileURLToPath(new URL('../../../../guests/kvserver/kvserver.elf', import.meta.url)),
);
const SMALL_TABLE = new TextEncoder().encode('kv.slots_log2=12 kv.work=4');

/** A kvserver machine whose console output accumulates in `out.text`. */
function bootKvserver(out: { text: string }): Machine {
  return createMachine({
    ramSize: 16 << 20,
    elf: KVSERVER,
    hostArgs: SMALL_TABLE,
    uartSink: (b) => (out.text += String.fromCharCode(b)),
  });
}

/** Runs until the guest sleeps with nothing to wake it but the host, as the vCPU thread would. */
function runToSleep(m: Machine, budget = 100_000_000): StopReason {
  const limit = m.cpu.retired + budget;
  for (;;) {
    const reason = m.run(1_000_000);
    if (reason === 'wfi' && m.wakeDelayMs() > 0) return reason;
    if (reason === 'halted' || reason === 'fatal') return reason;
    if (m.cpu.retired >= limit) throw new Error(`still running after ${budget} instructions`);
  }
}

/** Hands `text` to the UART as the vCPU thread does, then runs until the guest sleeps again. */
function request(m: Machine, out: { text: string }, text: string): string {
  const from = out.text.length;
  expect(m.uart.receive(new TextEncoder().encode(text))).toBe(text.length);
  m.cpu.wake();
  expect(runToSleep(m)).toBe('wfi');
  return out.text.slice(from);
}

describe('kvserver idle in WFI', () => {
  it('sleeps with no timer (wakeDelayMs Infinity) and answers PUT/GET handed to the UART', () => {
    const out = { text: '' };
    const m = bootKvserver(out);
    expect(runToSleep(m)).toBe('wfi');
    expect(out.text).toMatch(/kvserver: ready\n$/);
    expect(m.cpu.mie).toBe(MIP_MEIP); // the receive interrupt only: no timer armed
    expect(m.wakeDelayMs()).toBe(Infinity);
    const asleep = m.cpu.retired;
    expect(m.run(1_000_000)).toBe('wfi');
    expect(m.cpu.retired).toBe(asleep); // asleep means no instruction at all

    expect(request(m, out, 'PUT color blue\n')).toBe('OK\n');
    expect(m.wakeDelayMs()).toBe(Infinity);
    expect(request(m, out, 'GET color\n')).toBe('VALUE blue\n');
    expect(request(m, out, 'GET k3071\nGET nosuchkey\n')).toMatch(
      /^VALUE [0-9a-f]{16}\nNOT_FOUND\n$/,
    );
    // A request split across two deliveries, as a console may send it.
    expect(request(m, out, 'GE')).toBe('');
    expect(m.wakeDelayMs()).toBe(Infinity);
    expect(request(m, out, 'T color\r\n')).toBe('VALUE blue\n');
    expect(m.wakeDelayMs()).toBe(Infinity);
  });

  it('answers input that arrived while it was still building its table', () => {
    const out = { text: '' };
    const m = bootKvserver(out);
    m.run(10_000); // building
    m.uart.receive(new TextEncoder().encode('PING\n'));
    expect(runToSleep(m)).toBe('wfi');
    expect(out.text).toMatch(/kvserver: ready\nPONG\n$/);
  });

  it('answers after its sleeping state moved to another machine', () => {
    const out = { text: '' };
    const m = bootKvserver(out);
    expect(runToSleep(m)).toBe('wfi');
    expect(request(m, out, 'PUT where here\n')).toBe('OK\n');
    const saved = m.save();
    expect(saved.cpu.waiting).toBe(true);

    const moved = { text: '' };
    const n = createMachine({
      ramSize: 16 << 20,
      ram: { bytes: m.memory.main.buffer.slice(0) },
      uartSink: (b) => (moved.text += String.fromCharCode(b)),
    });
    n.restore(saved);
    expect(n.run(1_000_000)).toBe('wfi');
    expect(n.wakeDelayMs()).toBe(Infinity);
    expect(request(n, moved, 'GET where\n')).toBe('VALUE here\n');
    n.input(new TextEncoder().encode('SHUTDOWN\n'));
    expect(runToSleep(n)).toBe('halted');
    expect(moved.text).toMatch(/BYE\n$/);
    expect(n.exit).toEqual({ kind: 'pass', code: 0 });
  });
});
