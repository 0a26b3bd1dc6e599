import { readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { createMachine, type Machine } from '../machine/machine.js';
import { CODE_PAGE_INTS, CODE_SLOTS, CODE_SLOT_INTS } from '../memory/code-pages.js';
import type { RamBlock } from '../memory/ram-block.js';
import { decodeInto } from './decode.js';
import { Op } from './ops.js';
import { R, asm, bytesOf, li } from './test-asm.js';
import { translatePage } from './translate.js';

const PREBUILT = fileURLToPath(
  new URL('../../../../guests/conformance/prebuilt/', import.meta.url),
);

function boot(name: string, translate: boolean, out: number[] = []): Machine {
  return createMachine({
    ramSize: 16 << 20,
    elf: readFileSync(PREBUILT + name),
    timeMode: 'deterministic',
    translate,
    uartSink: (b) => out.push(b),
    identity: { generationId: 1n, entropy: new Uint32Array(8) },
  });
}

/** Pages of `block` that have a translated function now. */
function translatedPages(block: RamBlock): number {
  let n = 0;
  for (let p = 0; p < block.pages; p++) if (typeof block.code(p)?.translated === 'function') n++;
  return n;
}

describe('translated code is exactly the interpreter', () => {
  for (const name of ['speed.elf', 'interrupts.elf', 'rv32i-mem.elf', 'umode.elf']) {
    it(`${name}: same architectural state at every checkpoint`, () => {
      const fast = boot(name, true);
      const slow = boot(name, false);
      // Uneven budgets, so translated functions are cut at arbitrary points.
      const budgets = [1, 7, 1000, 4093, 77_777, 1_000_003, 30_000_001];
      let translated = false;
      for (let k = 0; k < 100; k++) {
        const budget = budgets[k % budgets.length]!;
        const a = fast.run(budget);
        const b = slow.run(budget);
        expect(a).toBe(b);
        expect(fast.save()).toEqual(slow.save());
        expect(fast.memory.main.dirtyWords).toEqual(slow.memory.main.dirtyWords);
        translated ||= translatedPages(fast.memory.main) > 0;
        if (a === 'halted') break;
      }
      expect(fast.exit).toEqual({ kind: 'pass', code: 0 });
      expect(translated, 'some page was translated').toBe(true);
      expect(
        Buffer.compare(Buffer.from(fast.memory.main.u8), Buffer.from(slow.memory.main.u8)),
      ).toBe(0);
    });
  }

  it('drops a translation when its code is overwritten', () => {
    // A hot loop in one page that rewrites one of its own instructions after 10000 rounds
    // (after the page was translated).
    const RAM = 0x80000000;
    const patched = asm.addi(R.a1, R.a1, 2);
    const words = [
      ...li(R.t0, RAM + 44), // 0: address of the patch site
      ...li(R.t1, patched), // 8
      asm.addi(R.a0, 0, 0), // 16: round counter
      ...li(R.a2, 10_000), // 20
      asm.addi(R.a0, R.a0, 1), // 28: loop
      asm.bne(R.a0, R.a2, 12), // 32: skip the patch until round 10000
      asm.sw(R.t1, R.t0, 0), // 36: patch
      asm.nop(), // 40
      asm.addi(R.a1, R.a1, 1), // 44: patch site (+1, then +2)
      ...li(R.t2, 30_000), // 48
      asm.blt(R.a0, R.t2, -28), // 56: back to 28
      asm.jal(0, 0), // 60
    ];
    for (const translate of [true, false]) {
      const m = createMachine({ ramSize: 1 << 20, timeMode: 'deterministic', translate });
      m.memory.writeBytes(RAM, bytesOf(words));
      m.cpu.reset(RAM);
      m.cpu.run(400_000);
      // Rounds 1..9999 add 1; round 10000 patches before the site runs: 10000..30000 add 2.
      expect(m.cpu.x[R.a1], `translate=${translate}`).toBe(9_999 + 20_001 * 2);
      expect(typeof m.memory.main.code(0)?.translated).toBe(translate ? 'function' : 'undefined');
    }
  });
});

describe('translatePage', () => {
  it('compiles every page of every conformance guest with all slots decoded', () => {
    for (const name of readdirSync(PREBUILT).filter((f) => f.endsWith('.elf'))) {
      const m = createMachine({
        ramSize: 1 << 20,
        elf: readFileSync(PREBUILT + name),
        translate: false,
      });
      const block = m.memory.main;
      const exit = { slot: 0, pc: 0 };
      let compiled = 0;
      for (let page = 0; page < 16; page++) {
        const { code } = block.openCode(page, () => {
          const blank = new Int32Array(CODE_PAGE_INTS);
          blank[CODE_SLOTS * CODE_SLOT_INTS] = Op.PAGE_END;
          return blank;
        });
        for (let s = 0; s < CODE_SLOTS; s++) decodeInto(block.i32[page * 1024 + s]!, code, s);
        const fn = translatePage(block, page, m.cpu.x, exit);
        if (fn !== null) compiled++;
      }
      expect(compiled, name).toBeGreaterThan(0);
    }
  });
});
