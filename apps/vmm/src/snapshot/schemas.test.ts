import { describe, expect, it } from 'vitest';

import { decodeDeviceState } from './device-state.js';
import { isSnapshotError, type SnapshotErrorCode } from './errors.js';
import { UART_RX_LIMIT } from './schemas/uart.js';
import { sampleContainer, withBody } from './test-support.js';

type Model = Record<string, unknown>;
type Edit = (m: Model) => unknown;

const csr =
  (edit: (c: Model) => void): Edit =>
  (m) => {
    const c = { ...(m.csr as Model) };
    edit(c);
    return { ...m, csr: c };
  };
const set =
  (key: string, value: unknown): Edit =>
  (m) => ({ ...m, [key]: value });
const without =
  (key: string): Edit =>
  (m) => {
    const copy = { ...m };
    delete copy[key];
    return copy;
  };

/** [section, what, edit of the valid body, the path named in the error]. */
const HOSTILE: [string, string, Edit, string][] = [
  // machine
  ['machine', 'another machine version', set('version', 2), 'version'],
  ['machine', 'an array body', () => [1], 'the body'],
  // cpu
  ['cpu', '33 GPRs', (m) => ({ ...m, x: [...(m.x as number[]), 0] }), 'x'],
  ['cpu', '31 GPRs', (m) => ({ ...m, x: (m.x as number[]).slice(1) }), 'x'],
  ['cpu', 'a negative register', (m) => ({ ...m, x: (m.x as number[]).with(5, -1) }), 'x[5]'],
  ['cpu', 'a 33-bit register', (m) => ({ ...m, x: (m.x as number[]).with(7, 2 ** 32) }), 'x[7]'],
  ['cpu', 'a fractional register', (m) => ({ ...m, x: (m.x as number[]).with(3, 1.5) }), 'x[3]'],
  ['cpu', 'a string register', (m) => ({ ...m, x: (m.x as unknown[]).with(3, '1') }), 'x[3]'],
  ['cpu', 'x0 not zero', (m) => ({ ...m, x: (m.x as number[]).with(0, 1) }), 'x[0]'],
  ['cpu', 'registers as an object', set('x', { length: 32 }), 'x'],
  ['cpu', 'a misaligned pc', set('pc', 0x80000002), 'pc'],
  ['cpu', 'a negative pc', set('pc', -4), 'pc'],
  ['cpu', 'privilege S', set('priv', 'S'), 'priv'],
  ['cpu', 'privilege as a number', set('priv', 3), 'priv'],
  ['cpu', 'waiting as a number', set('waiting', 1), 'waiting'],
  ['cpu', 'unimplemented mstatus bits', csr((c) => (c.mstatus = 1 << 1)), 'csr.mstatus'],
  ['cpu', 'MPP = S', csr((c) => (c.mstatus = 1 << 11)), 'csr.mstatus'],
  ['cpu', 'unimplemented mie bits', csr((c) => (c.mie = 1 << 5)), 'csr.mie'],
  ['cpu', 'a reserved mtvec mode', csr((c) => (c.mtvec = 0x80000002)), 'csr.mtvec'],
  ['cpu', 'a misaligned mepc', csr((c) => (c.mepc = 0x80000001)), 'csr.mepc'],
  ['cpu', '5 pmpcfg words', csr((c) => (c.pmpcfg = [0, 0, 0, 0, 0])), 'csr.pmpcfg'],
  ['cpu', 'a missing CSR', csr((c) => delete c.mscratch), 'csr.mscratch'],
  ['cpu', 'an unknown CSR', csr((c) => (c.satp = 0)), 'csr.satp'],
  ['cpu', 'an unsafe retired count', set('retired', 2 ** 53), 'retired'],
  ['cpu', 'a negative minstret', set('minstret', -1), 'minstret'],
  ['cpu', 'a 65-bit mcycle', set('mcycle', 2 ** 65), 'mcycle'],
  ['cpu', 'a misaligned reservation', set('reservation', 0x80000003), 'reservation'],
  ['cpu', 'a missing field', without('reservation'), 'reservation'],
  ['cpu', 'an unknown field', set('npc', 0), 'npc'],
  ['cpu', 'a version unlike the entry', set('version', 2), 'version'],
  ['cpu', 'a null body', () => null, 'the body'],
  // clock
  ['clock', 'an unknown mode', set('mode', 'virtual'), 'mode'],
  ['clock', 'a negative mtime', set('mtime', -1), 'mtime'],
  ['clock', 'mtime as a string', set('mtime', '0'), 'mtime'],
  ['clock', 'zero instructions per tick', set('instructionsPerTick', 0), 'instructionsPerTick'],
  [
    'clock',
    'a sub-tick of a whole tick',
    (m) => ({ ...m, subTick: m.instructionsPerTick }),
    'subTick',
  ],
  ['clock', 'no sub-tick', without('subTick'), 'subTick'],
  [
    'clock',
    'a real-time clock with a sub-tick',
    (m) => ({ ...m, mode: 'realtime', instructionsPerTick: undefined }),
    'subTick',
  ],
  // clint
  ['clint', 'msip = 2', set('msip', 2), 'msip'],
  ['clint', 'a 33-bit mtimecmp word', set('mtimecmpHi', 2 ** 32), 'mtimecmpHi'],
  // uart
  ['uart', 'a huge FIFO', set('rx', new Array<number>(UART_RX_LIMIT + 1).fill(0)), 'rx'],
  ['uart', 'a FIFO byte of 256', set('rx', [1, 256]), 'rx[1]'],
  ['uart', 'a FIFO of strings', set('rx', 'abc'), 'rx'],
  ['uart', 'unimplemented IER bits', set('ier', 0x10), 'ier'],
  ['uart', 'unimplemented FCR bits', set('fcr', 0x02), 'fcr'],
  ['uart', 'a 17-bit divisor', set('divisor', 0x10000), 'divisor'],
  ['uart', 'thrInterrupt as a string', set('thrInterrupt', 'true'), 'thrInterrupt'],
  // finisher
  ['finisher', 'an unknown exit kind', set('exit', { kind: 'crash', code: 0 }), 'exit.kind'],
  ['finisher', 'a pass with a code', set('exit', { kind: 'pass', code: 1 }), 'exit.code'],
  [
    'finisher',
    'a fail code over 16 bits',
    set('exit', { kind: 'fail', code: 0x10000 }),
    'exit.code',
  ],
  ['finisher', 'an exit without a code', set('exit', { kind: 'reset' }), 'exit.code'],
  // control
  [
    'control',
    'an upper-case generation id',
    set('generationId', '000000000000002A'),
    'generationId',
  ],
  ['control', 'a short generation id', set('generationId', '2a'), 'generationId'],
  ['control', '7 entropy words', set('entropy', [1, 2, 3, 4, 5, 6, 7]), 'entropy'],
  ['control', 'a negative entropy word', set('entropy', [1, 2, 3, 4, 5, 6, 7, -8]), 'entropy[7]'],
  [
    'control',
    '257 host-argument bytes',
    set('hostArgs', new Array<number>(257).fill(1)),
    'hostArgs',
  ],
  ['control', 'a negative READY count', set('readyCount', -1), 'readyCount'],
  // plic
  [
    'plic',
    '95 priorities',
    (m) => ({ ...m, priority: (m.priority as number[]).slice(1) }),
    'priority',
  ],
  [
    'plic',
    'a priority of 8',
    (m) => ({ ...m, priority: (m.priority as number[]).with(10, 8) }),
    'priority',
  ],
  [
    'plic',
    "source 0's priority",
    (m) => ({ ...m, priority: (m.priority as number[]).with(0, 1) }),
    'priority[0]',
  ],
  ['plic', 'source 0 pending', set('pending', [1, 0, 0]), 'pending[0]'],
  ['plic', 'source 0 claimed', set('claimed', [0x401, 0, 0]), 'claimed[0]'],
  ['plic', 'a fourth pending word', set('pending', [0, 0, 0, 0]), 'pending'],
  ['plic', '3 enable words', set('enable', [0, 0, 0]), 'enable'],
  ['plic', 'a 33-bit enable word', set('enable', [0, 0, 0, 0, 0, 2 ** 32]), 'enable[5]'],
  ['plic', 'a threshold of 9', set('threshold', [9, 0]), 'threshold'],
  ['plic', 'a third context output', set('outputs', 4), 'outputs'],
  ['plic', 'no outputs', without('outputs'), 'outputs'],
];

function decodeError(bytes: Uint8Array): {
  code: SnapshotErrorCode;
  section: string | undefined;
  message: string;
} {
  try {
    decodeDeviceState(bytes);
  } catch (err) {
    if (!isSnapshotError(err)) throw new Error(`expected a SnapshotError, got ${String(err)}`);
    return { code: err.code, section: err.section, message: err.message };
  }
  throw new Error('expected a SnapshotError, but the body was accepted');
}

describe('hostile section bodies (valid framing and CRC)', () => {
  const valid = sampleContainer();

  it.each(HOSTILE)('%s: rejects %s', (section, _what, edit, path) => {
    const err = decodeError(withBody(valid, section, edit));
    expect(err.code).toBe('SNAPSHOT_INVALID_STATE');
    expect(err.section).toBe(section);
    expect(err.message).toContain(`section '${section}' (version 1) is invalid: ${path} must be`);
  });

  it.each([
    ['invalid UTF-8', new Uint8Array([0x7b, 0xff, 0x7d])],
    ['a UTF-16 body', new Uint8Array([0x7b, 0, 0x7d, 0])],
    ['truncated JSON', new TextEncoder().encode('{"version":1')],
    ['an empty body', new Uint8Array(0)],
    ['trailing garbage', new TextEncoder().encode('{"version":1} x')],
  ])('rejects %s', (_what, body) => {
    const err = decodeError(withBody(valid, 'cpu', body));
    expect(err.code).toBe('SNAPSHOT_INVALID_STATE');
    expect(err.section).toBe('cpu');
  });

  it('rejects deep nesting without a stack overflow escaping', () => {
    const depth = 400_000; // within the uart section's 1 MiB limit
    const err = decodeError(withBody(valid, 'uart', '['.repeat(depth) + ']'.repeat(depth)));
    expect(err.code).toBe('SNAPSHOT_INVALID_STATE');
    const inField = `{"version":1,"rx":${'['.repeat(depth)}${']'.repeat(depth)}}`;
    expect(decodeError(withBody(valid, 'uart', inField)).code).toBe('SNAPSHOT_INVALID_STATE');
  });

  it('treats a __proto__ key as an unknown field, not a prototype', () => {
    const body = '{"__proto__":{"polluted":1},"version":1,"exit":null}';
    const err = decodeError(withBody(valid, 'finisher', body));
    expect(err.code).toBe('SNAPSHOT_INVALID_STATE');
    expect(err.message).toMatch(/__proto__ must be absent/);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  it('rejects a huge FIFO by size before parsing it', () => {
    const body = `{"rx":[${'0,'.repeat(600_000)}0]}`;
    expect(decodeError(withBody(valid, 'uart', body)).code).toBe('SNAPSHOT_TOO_LARGE');
  });

  it('accepts the largest legal FIFO and host arguments', () => {
    const bytes = withBody(valid, 'uart', set('rx', new Array<number>(UART_RX_LIMIT).fill(255)));
    expect(decodeDeviceState(bytes).state.uart.rx).toHaveLength(UART_RX_LIMIT);
    const args = withBody(valid, 'control', set('hostArgs', new Array<number>(256).fill(7)));
    expect(decodeDeviceState(args).state.control.hostArgs).toHaveLength(256);
  });

  it('accepts 64-bit counters and a real-time clock', () => {
    const cpu = withBody(valid, 'cpu', (m) => ({ ...m, minstret: 2 ** 64 - 2048, mcycle: 0 }));
    expect(decodeDeviceState(cpu).state.cpu.minstret).toBe(2 ** 64 - 2048);
    const clock = withBody(valid, 'clock', () => ({ version: 1, mode: 'realtime', mtime: 5 }));
    expect(decodeDeviceState(clock).state.clock).toEqual({
      version: 1,
      mode: 'realtime',
      mtime: 5,
    });
  });
});
