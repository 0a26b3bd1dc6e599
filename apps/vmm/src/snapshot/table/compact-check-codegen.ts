/**
 * Generates the compact decoder's first pass over a body, the layout check, from a
 * {@link CompactLayout}: in layout order, every presence byte is 0 or 1 and the slots of an
 * absent value are zero (so one state has one encoding); then every tail piece is within its
 * limit and the bytes left (an ASCII piece also below 0x80), and nothing follows the tail. A
 * failure is `SNAPSHOT_MALFORMED`. It judges no value a table rule rules on — an unknown enum
 * code is the value pass's to reject — so bytes both malformed and invalid are malformed.
 *
 * @packageDocumentation
 */

import { join } from './check-plan.js';
import { statePathOf, type CompactLayout, type LayoutSection } from './compact-layout.js';
import type { FieldTable } from './fields.js';
import { Constants, Locals, compile, literal } from './source.js';

/** The cold paths the generated check calls; each throws a `SnapshotError`. */
export interface LayoutFaults {
  /** `SNAPSHOT_MALFORMED` with `message` and `section`. */
  malformed(message: string, section?: string): never;
  /** Malformed unless the `n` bytes at `at` are zero; `what` names them. */
  zeroSlots(bytes: Uint8Array, at: number, n: number, section: string, what: string): void;
  /** The u32 count at `at` of the bytes after it: malformed beyond `limit` or the body's `end`. */
  byteCount(
    v: DataView,
    at: number,
    end: number,
    limit: number,
    section: string,
    what: string,
  ): number;
}

/** A generated pass over bytes whose header was checked; `v` views exactly `bytes`. */
export type CompactPass<R> = (bytes: Uint8Array, v: DataView) => R;

/** The layout check of `layout`, for bodies at offset `header`, worded for layout `version`. */
export function compileLayoutCheck(
  layout: CompactLayout,
  header: number,
  version: number,
  faults: LayoutFaults,
): CompactPass<void> {
  const k = new Constants();
  const locals = new Locals();
  const lines: string[] = [];
  const malformed = k.ref(faults.malformed);
  const zeroSlots = k.ref(faults.zeroSlots);
  const at = (offset: number): number => header + offset;

  const walk = (section: LayoutSection, fields: FieldTable, prefix: string): void => {
    const sec = literal(section.name);
    for (const [name, f] of Object.entries(fields)) {
      const path = join(prefix, name);
      if (f.kind === 'record') {
        walk(section, f.fields, path);
        continue;
      }
      const what = statePathOf(section, path);
      const slot = layout.slotAt(section.name, path);
      if (slot.enc === 'presence') {
        const p = locals.next('p');
        lines.push(
          `const ${p} = bytes[${at(slot.offset)}];`,
          `if (${p} > 1) ${malformed}(${literal(`the presence byte of ${what} is `)} + ${p} + ', not 0 or 1', ${sec});`,
          `if (${p} === 0) ${zeroSlots}(bytes, ${at(slot.offset + 1)}, 8, ${sec}, ${literal(`${what} when absent`)});`,
        );
      } else if (slot.enc === 'folded' && f.kind === 'nullable') {
        const unused = f.unusedSlots ?? `${what} when null`;
        lines.push(
          `if (bytes[${at(slot.offset)}] === 0) ${zeroSlots}(bytes, ${at(slot.offset + 1)}, ${slot.end - slot.offset - 1}, ${sec}, ${literal(unused)});`,
        );
      } else if (f.kind === 'variant' && f.otherwise.kind === 'absent' && slot.enc === 'f64') {
        const tag = layout.slot(section.name, join(prefix, f.tag), 'code');
        const codes = otherwiseCodes(fields, f.tag, Object.keys(f.cases), tag.base);
        if (codes.length > 0) {
          const when = codes.map((c) => `bytes[${at(tag.offset)}] === ${c}`).join(' || ');
          lines.push(
            `if (${when}) ${zeroSlots}(bytes, ${at(slot.offset)}, 8, ${sec}, ${literal(f.otherwise.unusedSlots)});`,
          );
        }
      }
    }
  };
  for (const section of layout.sections) walk(section, section.fields, '');

  lines.push('const end = v.byteLength;', `let p = ${at(layout.fixedBytes)};`);
  const byteCount = k.ref(faults.byteCount);
  for (const piece of layout.tail) {
    const sec = literal(piece.section.name);
    const n = locals.next('n');
    if (piece.enc === 'ascii') {
      const c = locals.next('c');
      lines.push(
        `const ${n} = bytes[p++];`,
        `if (${n} > ${piece.limit}) ${malformed}(${literal(`${piece.statePath} has `)} + ${n} + ${literal(` characters; layout ${version} carries at most ${piece.limit}`)}, ${sec});`,
        `if (${n} > end - p) ${malformed}(${literal(`${piece.statePath} runs past the end of the body`)}, ${sec});`,
        `for (let k = 0; k < ${n}; k++) {`,
        `const ${c} = bytes[p + k];`,
        `if (${c} > 0x7f) ${malformed}(${literal(`${piece.statePath} has a non-ASCII byte `)} + ${c}, ${sec});`,
        '}',
        `p += ${n};`,
      );
    } else {
      lines.push(
        `const ${n} = ${byteCount}(v, p, end, ${piece.limit}, ${sec}, ${literal(piece.statePath)});`,
        `p += 4 + ${n};`,
      );
    }
  }
  lines.push(
    `if (p !== end) ${malformed}((end - p) + ' bytes follow the last field of the body');`,
  );
  const body = ['return function checkLayout(bytes, v) {', ...lines, '}'].join('\n');
  return compile('compact-layout-check', k, body);
}

/** Codes of the values of enum `tag` (a field of `fields`, codes from `base`) not among `cases`. */
function otherwiseCodes(
  fields: FieldTable,
  tag: string,
  cases: readonly string[],
  base: number,
): number[] {
  const field = fields[tag];
  if (field?.kind !== 'enum') throw new Error(`${tag} is no enum`);
  return field.values.flatMap((v, i) => (cases.includes(v) ? [] : [i + base]));
}
