/**
 * Places the fields of the machine's section tables in the compact hand-off layout: where each
 * field's bytes go and how they encode it. The encoder, the layout check and the decoder are
 * generated from this placement; FORMAT.md ("Compact hand-off state") states its rules:
 *
 * - the fixed part holds every field of every section, sections in order, fields in field order:
 *   a number as a little-endian f64; a boolean as a u8 0/1; an enum as a u8 code (its index);
 *   a u32 array as its u32 items; a nested record as its fields;
 * - a nullable number is a u8 presence byte (0 null, 1 present) and its f64, zero bytes when
 *   null; a nullable record whose first field is an enum folds its presence into that enum's
 *   code (0 null, 1 + index otherwise) and leaves its other slots zero when null;
 * - a variant is the f64 of its cases, zero bytes when the tag says it is absent;
 * - the tail, after the fixed part, holds the variable-length fields, smallest limit first (ties
 *   in field order): a hex field as a u8 length and its ASCII bytes, a byte array as a u32 count
 *   and its bytes.
 *
 * @packageDocumentation
 */

import { crc32 } from 'node:zlib';

import { join } from './check-plan.js';
import type { FieldTable, RecordField } from './fields.js';

/** A section as the layout sees it. */
export interface LayoutSection {
  readonly name: string;
  readonly version: number;
  /** Key of its model in a `MachineState`, or null when its fields are `MachineState`'s own. */
  readonly component: string | null;
  readonly fields: FieldTable;
}

/** Where and how the compact layout carries one field (offsets from the start of the body). */
export type Slot =
  | { readonly enc: 'f64'; readonly offset: number }
  | { readonly enc: 'flag'; readonly offset: number }
  | { readonly enc: 'code'; readonly offset: number; readonly base: number }
  | { readonly enc: 'u32s'; readonly offset: number; readonly length: number }
  /** A nullable number: presence byte at `offset`, the f64 after it. */
  | { readonly enc: 'presence'; readonly offset: number }
  /** A nullable record: its tag's code at `offset` (0: null), its other slots up to `end`. */
  | { readonly enc: 'folded'; readonly offset: number; readonly end: number }
  | { readonly enc: 'tail'; readonly piece: TailPiece };

/** The slot of encoding `E`. */
export type SlotOf<E extends Slot['enc']> = Extract<Slot, { readonly enc: E }>;

/** A variable-length field, carried in the tail. */
export interface TailPiece {
  readonly section: LayoutSection;
  /** Path in the section body. */
  readonly path: string;
  /** Path in the `MachineState`, as messages name it. */
  readonly statePath: string;
  /** `ascii`: u8 length + bytes < 0x80; `bytes`: u32 count + bytes. */
  readonly enc: 'ascii' | 'bytes';
  /** Most items (characters, bytes) carried. */
  readonly limit: number;
  /** Bytes of its length or count. */
  readonly countBytes: number;
}

/** The placement of every field of some sections. */
export interface CompactLayout {
  readonly sections: readonly LayoutSection[];
  /** Bytes of the fixed part: the tail starts here. */
  readonly fixedBytes: number;
  /** The tail pieces, in tail order. */
  readonly tail: readonly TailPiece[];
  /** Smallest body: every tail piece empty. */
  readonly minBodyBytes: number;
  /** Largest body: every tail piece at its limit. */
  readonly maxBodyBytes: number;
  /** One line per slot, in body order: what {@link compactLayoutFingerprint} covers. */
  readonly description: string;
  /** The slot of field `path` of section `section`. */
  slotAt(section: string, path: string): Slot;
  /** {@link slotAt}, which must be encoded as `enc` (the generators' consistency check). */
  slot<E extends Slot['enc']>(section: string, path: string, enc: E): SlotOf<E>;
}

/** Places the fields of `sections`, in order. */
export function planCompactLayout(sections: readonly LayoutSection[]): CompactLayout {
  const slots = new Map<string, Slot>();
  const lines: string[] = [];
  const pieces: TailPiece[] = [];
  let offset = 0;

  const put = (
    section: LayoutSection,
    path: string,
    slot: Slot,
    size: number,
    what: string,
  ): void => {
    slots.set(`${section.name}/${path}`, slot);
    if (slot.enc !== 'tail') lines.push(`@${offset}+${size} ${what} ${statePathOf(section, path)}`);
    offset += size;
  };

  const place = (section: LayoutSection, fields: FieldTable, prefix: string): void => {
    for (const [name, f] of Object.entries(fields)) {
      const path = join(prefix, name);
      const at = offset;
      switch (f.kind) {
        case 'version':
        case 'integer':
        case 'u64':
        case 'bits':
        case 'variant':
          put(section, path, { enc: 'f64', offset: at }, 8, 'f64');
          break;
        case 'boolean':
          put(section, path, { enc: 'flag', offset: at }, 1, 'flag');
          break;
        case 'enum':
          put(section, path, { enc: 'code', offset: at, base: 0 }, 1, `code ${f.values.join('|')}`);
          break;
        case 'u32-array':
          put(
            section,
            path,
            { enc: 'u32s', offset: at, length: f.length },
            4 * f.length,
            `u32x${f.length}`,
          );
          break;
        case 'byte-array':
        case 'hex': {
          const ascii = f.kind === 'hex';
          const piece: TailPiece = {
            section,
            path,
            statePath: statePathOf(section, path),
            enc: ascii ? 'ascii' : 'bytes',
            limit: ascii ? f.carried : f.max,
            countBytes: ascii ? 1 : 4,
          };
          pieces.push(piece);
          put(section, path, { enc: 'tail', piece }, 0, 'tail');
          break;
        }
        case 'record':
          place(section, f.fields, path);
          break;
        case 'nullable':
          if (f.of.kind === 'record') placeFolded(section, f.of, path);
          else put(section, path, { enc: 'presence', offset: at }, 9, 'presence f64');
          break;
      }
    }
  };

  /** A nullable record: its leading enum's code doubles as presence. */
  const placeFolded = (section: LayoutSection, r: RecordField, path: string): void => {
    const [first, ...rest] = Object.entries(r.fields);
    if (first === undefined || first[1].kind !== 'enum') {
      throw new Error(`${section.name}.${path}: a nullable record must start with an enum`);
    }
    const at = offset;
    const tag = first[1];
    put(
      section,
      join(path, first[0]),
      { enc: 'code', offset: at, base: 1 },
      1,
      `code 1+ ${tag.values.join('|')}`,
    );
    place(section, Object.fromEntries(rest) as FieldTable, path);
    slots.set(`${section.name}/${path}`, { enc: 'folded', offset: at, end: offset });
  };

  for (const section of sections) place(section, section.fields, '');
  const fixedBytes = offset;
  const tail = [...pieces].sort((a, b) => a.limit - b.limit);
  for (const piece of tail) lines.push(`tail ${piece.enc}<=${piece.limit} ${piece.statePath}`);
  const minBodyBytes = fixedBytes + tail.reduce((n, p) => n + p.countBytes, 0);
  const maxBodyBytes = minBodyBytes + tail.reduce((n, p) => n + p.limit, 0);
  return {
    sections,
    fixedBytes,
    tail,
    minBodyBytes,
    maxBodyBytes,
    description: lines.join('\n'),
    slotAt(section, path) {
      const slot = slots.get(`${section}/${path}`);
      if (slot === undefined) throw new Error(`no compact slot for ${section}.${path}`);
      return slot;
    },
    slot<E extends Slot['enc']>(section: string, path: string, enc: E): SlotOf<E> {
      const slot = this.slotAt(section, path);
      if (slot.enc !== enc)
        throw new Error(`${section}.${path} has a ${slot.enc} slot, not ${enc}`);
      return slot as SlotOf<E>;
    },
  };
}

/** Path of a section's field in a `MachineState`. */
export function statePathOf(section: LayoutSection, path: string): string {
  if (section.component === null) return path;
  return path === '' ? section.component : join(section.component, path);
}

/** A checksum of `layout.description`: equal for two builds exactly when they place every field alike. */
export function compactLayoutFingerprint(layout: CompactLayout): number {
  return crc32(layout.description) >>> 0;
}
