import { MemstoreError } from '../errors.js';
import { crc32c, hex32 } from './crc32c.js';
import {
  decodeHeader,
  decodePreamble,
  formatError,
  MAX_HEADER_PAYLOAD_BYTES,
  MAX_RUN_PAGES,
  PAGE_BYTES,
  PREAMBLE_BYTES,
  RUN_PREFIX_BYTES,
  SECTION,
  SECTION_HEADER_BYTES,
  sectionCrc,
  TRAILER_PAYLOAD_BYTES,
  type ExportHeader,
} from './export-format.js';
import {
  checkBlockLayout,
  checkVmName,
  MAX_DEVICE_STATE_BYTES,
  MAX_VM_SPEC_BYTES,
} from './limits.js';
import { validateSnapshotName } from './naming.js';

/** What the parser found, in file order; each is fully checked before it is reported. */
export type ParsedSection =
  | { readonly type: 'header'; readonly header: ExportHeader }
  | { readonly type: 'deviceState'; readonly bytes: Uint8Array }
  | {
      readonly type: 'run';
      readonly block: number;
      readonly firstPage: number;
      readonly pageCount: number;
      /** pageCount * 4096 bytes; valid until the next push (copy or write it before). */
      readonly data: Uint8Array;
    }
  | { readonly type: 'end' };

type Stage = 'preamble' | 'header' | 'deviceState' | 'runs' | 'done';

const NAMES: Record<number, string> = {
  [SECTION.header]: 'header',
  [SECTION.deviceState]: 'device state',
  [SECTION.run]: 'page run',
  [SECTION.trailer]: 'trailer',
};

/**
 * Reads a snapshot export file pushed in pieces of any size, treating every byte as hostile:
 * each section's length is checked against what may come at that point before any of it is
 * buffered (so memory stays bounded by the largest section, ~1 MiB after the header), every
 * section's CRC-32C is checked before its content is used, and every run is checked against
 * the header's block table (block, page range, order, counts) before it is reported. Errors are
 * SNAPSHOT_FORMAT with what was wrong and the file offset.
 */
export class SnapshotFileParser {
  private readonly pending: Uint8Array[] = [];
  private pendingBytes = 0;
  /** File offset of the first pending byte. */
  private offset = 0;
  private stage: Stage = 'preamble';
  private minor = 0;
  private header: ExportHeader | undefined;
  private block = 0;
  /** First page the next run of `block` may start at. */
  private nextPage = 0;
  private blockRuns = 0;
  private blockPages = 0;
  private totalRuns = 0;

  constructor(private readonly limits: { readonly maxBlockSize: number }) {}

  /** Bytes consumed so far (the offset of the next section). */
  get position(): number {
    return this.offset;
  }

  /** Feeds the next bytes; returns the sections they completed. SNAPSHOT_FORMAT. */
  push(chunk: Uint8Array): ParsedSection[] {
    if (chunk.length === 0) return [];
    if (this.stage === 'done') {
      throw formatError(`${chunk.length} bytes follow the trailer at offset ${this.offset}`);
    }
    this.pending.push(chunk);
    this.pendingBytes += chunk.length;
    const out: ParsedSection[] = [];
    for (;;) {
      const section = this.next();
      if (section === undefined) break;
      out.push(section);
      if (section.type === 'end') {
        if (this.pendingBytes > 0) {
          throw formatError(
            `${this.pendingBytes} bytes follow the trailer at offset ${this.offset}`,
          );
        }
        break;
      }
    }
    return out;
  }

  /** Declares the end of the stream. SNAPSHOT_FORMAT when the file is not complete. */
  finish(): void {
    if (this.stage === 'done') return;
    throw formatError(
      `the file ends after ${this.offset + this.pendingBytes} bytes, ` +
        `${this.stage === 'runs' ? 'before its trailer' : `inside or before its ${this.stage === 'preamble' ? 'preamble' : NAMES[SECTION[this.stage]]}`}` +
        ' (truncated)',
    );
  }

  private next(): ParsedSection | undefined {
    if (this.stage === 'preamble') {
      const bytes = this.take(PREAMBLE_BYTES);
      if (bytes === undefined) return undefined;
      this.minor = decodePreamble(bytes).minor;
      this.stage = 'header';
    }
    const head = this.peek(SECTION_HEADER_BYTES);
    if (head === undefined) return undefined;
    const view = new DataView(head.buffer, head.byteOffset, SECTION_HEADER_BYTES);
    const type = view.getUint32(0, true);
    const length = view.getUint32(4, true);
    this.checkSectionShape(type, length);
    const whole = this.take(SECTION_HEADER_BYTES + length);
    if (whole === undefined) return undefined;
    const at = this.offset - whole.length;
    const payload = whole.subarray(SECTION_HEADER_BYTES);
    const stored = new DataView(whole.buffer, whole.byteOffset).getUint32(8, true);
    const crc = sectionCrc(whole.subarray(0, 8), payload);
    if (crc !== stored) {
      throw formatError(
        `the ${NAMES[type]} section at offset ${at} fails its CRC-32C check (stored ${hex32(stored)}, computed ${hex32(crc)})`,
      );
    }
    return this.dispatch(type, payload, at);
  }

  /** Checks a section's type and length against the stage before its payload is buffered. */
  private checkSectionShape(type: number, length: number): void {
    const at = this.offset;
    const expected: number[] =
      this.stage === 'header'
        ? [SECTION.header]
        : this.stage === 'deviceState'
          ? [SECTION.deviceState]
          : [SECTION.run, SECTION.trailer];
    if (!expected.includes(type)) {
      throw formatError(
        `a section of type ${type} (${NAMES[type] ?? 'unknown'}) at offset ${at} where a ` +
          `${expected.map((t) => NAMES[t]).join(' or ')} section must come`,
      );
    }
    const max =
      type === SECTION.header
        ? MAX_HEADER_PAYLOAD_BYTES
        : type === SECTION.deviceState
          ? this.header!.deviceStateBytes
          : type === SECTION.run
            ? RUN_PREFIX_BYTES + MAX_RUN_PAGES * PAGE_BYTES
            : this.minor > 0
              ? PAGE_BYTES
              : TRAILER_PAYLOAD_BYTES;
    const min =
      type === SECTION.deviceState
        ? this.header!.deviceStateBytes
        : type === SECTION.run
          ? RUN_PREFIX_BYTES + PAGE_BYTES
          : type === SECTION.trailer
            ? TRAILER_PAYLOAD_BYTES
            : 0;
    if (length < min || length > max) {
      throw formatError(
        `the ${NAMES[type]} section at offset ${at} claims ${length} bytes; it must hold ` +
          (min === max ? `exactly ${min}` : `${min} to ${max}`),
      );
    }
  }

  private dispatch(type: number, payload: Uint8Array, at: number): ParsedSection {
    switch (type) {
      case SECTION.header: {
        const header = checkHeader(decodeHeader(payload, this.minor), this.limits.maxBlockSize);
        this.header = header;
        this.stage = 'deviceState';
        return { type: 'header', header };
      }
      case SECTION.deviceState: {
        const crc = crc32c(payload);
        if (crc !== this.header!.deviceStateCrc32c) {
          throw formatError(
            `the device state's CRC-32C is ${hex32(crc)}, the header says ${hex32(this.header!.deviceStateCrc32c)}`,
          );
        }
        this.stage = 'runs';
        return { type: 'deviceState', bytes: payload };
      }
      case SECTION.run:
        return this.run(payload, at);
      default:
        this.trailer(payload);
        this.stage = 'done';
        return { type: 'end' };
    }
  }

  private run(payload: Uint8Array, at: number): ParsedSection {
    const header = this.header!;
    const view = new DataView(payload.buffer, payload.byteOffset, RUN_PREFIX_BYTES);
    const block = view.getUint16(0, true);
    const reserved = view.getUint16(2, true);
    const pageCount = view.getUint32(4, true);
    const firstPageBig = view.getBigUint64(8, true);
    const where = `the page run at offset ${at}`;
    if (reserved !== 0) throw formatError(`${where} has a non-zero reserved field`);
    if (pageCount < 1 || pageCount > MAX_RUN_PAGES) {
      throw formatError(`${where} claims ${pageCount} pages; a run holds 1 to ${MAX_RUN_PAGES}`);
    }
    if (payload.length !== RUN_PREFIX_BYTES + pageCount * PAGE_BYTES) {
      throw formatError(
        `${where} claims ${pageCount} pages but its section holds ${payload.length - RUN_PREFIX_BYTES} data bytes`,
      );
    }
    if (block >= header.blocks.length || block < this.block) {
      throw formatError(
        `${where} names block ${block}; runs must come in block order and the file has ${header.blocks.length} block(s)` +
          (block < this.block ? ` (block ${this.block} is being read)` : ''),
      );
    }
    while (this.block < block) this.closeBlock();
    const info = header.blocks[block]!;
    const pages = info.size / PAGE_BYTES;
    if (firstPageBig > BigInt(pages) || Number(firstPageBig) + pageCount > pages) {
      throw formatError(
        `${where} covers pages [${firstPageBig}, ${firstPageBig + BigInt(pageCount)}) outside block "${info.id}", which has ${pages} pages`,
      );
    }
    const firstPage = Number(firstPageBig);
    if (firstPage < this.nextPage) {
      throw formatError(
        `${where} starts at page ${firstPage} of block "${info.id}", before the end of the previous run (page ${this.nextPage}); runs ascend and do not overlap`,
      );
    }
    this.nextPage = firstPage + pageCount;
    this.blockRuns++;
    this.blockPages += pageCount;
    this.totalRuns++;
    if (this.blockRuns > info.runCount || this.blockPages > info.storedPages) {
      throw formatError(
        `block "${info.id}" has more runs or pages than its header says (${info.runCount} runs, ${info.storedPages} pages)`,
      );
    }
    return { type: 'run', block, firstPage, pageCount, data: payload.subarray(RUN_PREFIX_BYTES) };
  }

  /** Checks the current block got exactly the runs and pages its header entry says; moves on. */
  private closeBlock(): void {
    const info = this.header!.blocks[this.block]!;
    if (this.blockRuns !== info.runCount || this.blockPages !== info.storedPages) {
      throw formatError(
        `block "${info.id}" has ${this.blockRuns} run(s) of ${this.blockPages} page(s), but its header ` +
          `says ${info.runCount} run(s) of ${info.storedPages} page(s)`,
      );
    }
    this.block++;
    this.nextPage = 0;
    this.blockRuns = 0;
    this.blockPages = 0;
  }

  private trailer(payload: Uint8Array): void {
    while (this.block < this.header!.blocks.length) this.closeBlock();
    const view = new DataView(payload.buffer, payload.byteOffset, TRAILER_PAYLOAD_BYTES);
    const total = view.getBigUint64(0, true);
    const runs = view.getUint32(8, true);
    if (total !== BigInt(this.offset) || runs !== this.totalRuns) {
      throw formatError(
        `the trailer says ${total} bytes and ${runs} runs, but the file has ${this.offset} bytes and ${this.totalRuns} runs`,
      );
    }
  }

  /** The next `n` bytes without consuming them, once that many are pending. */
  private peek(n: number): Uint8Array | undefined {
    if (this.pendingBytes < n) return undefined;
    const first = this.pending[0]!;
    if (first.length >= n) return first.subarray(0, n);
    const out = new Uint8Array(n);
    let at = 0;
    for (const p of this.pending) {
      const part = p.subarray(0, Math.min(p.length, n - at));
      out.set(part, at);
      at += part.length;
      if (at === n) break;
    }
    return out;
  }

  /** Consumes the next `n` bytes, once that many are pending. */
  private take(n: number): Uint8Array | undefined {
    const bytes = this.peek(n);
    if (bytes === undefined) return undefined;
    let left = n;
    while (left > 0) {
      const first = this.pending[0]!;
      if (first.length <= left) {
        this.pending.shift();
        left -= first.length;
      } else {
        this.pending[0] = first.subarray(left);
        left = 0;
      }
    }
    this.pendingBytes -= n;
    this.offset += n;
    return bytes;
  }
}

/** Checks the header's values (its fields were bounds-checked when decoded). */
function checkHeader(h: ExportHeader, maxBlockSize: number): ExportHeader {
  try {
    validateSnapshotName(h.name, 'the snapshot name in the file');
    checkVmName(h.vmName);
  } catch (err) {
    throw asFormat(err);
  }
  if (h.vmSpec.length > MAX_VM_SPEC_BYTES) {
    throw formatError(`the VM spec is ${h.vmSpec.length} bytes, more than ${MAX_VM_SPEC_BYTES}`);
  }
  if (h.deviceStateBytes < 1 || h.deviceStateBytes > MAX_DEVICE_STATE_BYTES) {
    throw formatError(
      `the device state is ${h.deviceStateBytes} bytes; it must hold 1 to ${MAX_DEVICE_STATE_BYTES}`,
    );
  }
  for (const b of h.blocks) {
    if (b.size > maxBlockSize) {
      throw formatError(
        `block "${b.id}" is ${b.size} bytes, larger than the largest region of this memstore ` +
          `(${maxBlockSize} bytes, --max-region-size)`,
      );
    }
  }
  try {
    checkBlockLayout(h.blocks, maxBlockSize);
  } catch (err) {
    throw asFormat(err);
  }
  for (const b of h.blocks) {
    const pages = b.size / PAGE_BYTES;
    const sane =
      b.storedPages <= pages &&
      b.runCount <= b.storedPages &&
      b.storedPages <= b.runCount * MAX_RUN_PAGES;
    if (!sane) {
      throw formatError(
        `block "${b.id}" (${pages} pages) claims ${b.runCount} run(s) of ${b.storedPages} page(s) in all, which cannot be`,
      );
    }
  }
  return h;
}

function asFormat(err: unknown): unknown {
  return MemstoreError.is(err, 'SNAPSHOT_INVALID') ? formatError(err.message) : err;
}
