import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { Op, OP_NAMES } from './ops.js';

describe('operation ids', () => {
  it('are dense and unique', () => {
    const ids = Object.values(Op).sort((a, b) => a - b);
    expect(ids).toEqual(ids.map((_, k) => k));
    expect(OP_NAMES[Op.ADDI]).toBe('ADDI');
  });

  it('match the literal case labels of the interpreter', () => {
    const src = readFileSync(new URL('./hart.ts', import.meta.url), 'utf8');
    const body = src.slice(src.indexOf('private execute('), src.indexOf('private mret('));
    const labels = [...body.matchAll(/case (\d+): (?:\{\s*)?\/\/ (\w+)/g)].map((m) => [
      Number(m[1]),
      m[2],
    ]);
    expect(labels.length).toBe(OP_NAMES.length);
    for (const [id, name] of labels) expect(OP_NAMES[id as number], `case ${id}`).toBe(name);
  });
});
