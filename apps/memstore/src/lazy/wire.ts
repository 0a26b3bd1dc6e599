/**
 * The page channel's wire format, version 1 (apps/memstore/LAZY.md, "Page channel"). Every
 * frame is a 4-byte big-endian length (of what follows), a 1-byte type and the type's body;
 * integers are big-endian. Page bytes are raw (no protobuf): a PAGES frame's body is its
 * 12-byte header followed by `count` pages of 4096 bytes.
 *
 * | type | direction | body |
 * |---|---|---|
 * | HELLO 1 | reader → source | u16 version, u16 id length, source id, u16 token length, token |
 * | WELCOME 2 | source → reader | u16 version, u32 page size, u64 pages |
 * | REQUEST 3 | reader → source | u64 first page, u32 count (1 … {@link MAX_REQUEST_PAGES}) |
 * | PAGES 4 | source → reader | u64 first page, u32 count, count × 4096 bytes |
 * | ERROR 5 | source → reader | u16 code length, code, u16 message length, message; then close |
 */
export const PAGE_CHANNEL_VERSION = 1;
export const PAGE_BYTES = 4096;
/** Most pages one REQUEST may ask for (1 MiB). */
export const MAX_REQUEST_PAGES = 256;
/** Largest frame a reader sends (a HELLO with its two strings). */
export const MAX_READER_FRAME = 4096;
/** Largest control frame (WELCOME, ERROR) a source sends; PAGES are bounded by their count. */
export const MAX_CONTROL_FRAME = 4096;

export const FrameType = {
  Hello: 1,
  Welcome: 2,
  Request: 3,
  Pages: 4,
  Error: 5,
} as const;

/** Bytes of a frame's length prefix and type. */
export const FRAME_PREFIX = 5;
/** Bytes of a PAGES frame before its page bytes (prefix + first page + count). */
export const PAGES_HEADER = FRAME_PREFIX + 12;
/** Bytes of a REQUEST frame in full. */
export const REQUEST_FRAME = FRAME_PREFIX + 12;

function strings(...parts: string[]): Buffer[] {
  return parts.map((p) => Buffer.from(p, 'utf8'));
}

/** A HELLO frame. */
export function helloFrame(sourceId: string, token: string): Buffer {
  const [id, tok] = strings(sourceId, token) as [Buffer, Buffer];
  const body = 2 + 2 + id.length + 2 + tok.length;
  const b = Buffer.alloc(FRAME_PREFIX + body);
  b.writeUInt32BE(1 + body, 0);
  b[4] = FrameType.Hello;
  let o = FRAME_PREFIX;
  o = b.writeUInt16BE(PAGE_CHANNEL_VERSION, o);
  o = b.writeUInt16BE(id.length, o);
  o += id.copy(b, o);
  o = b.writeUInt16BE(tok.length, o);
  tok.copy(b, o);
  return b;
}

/** A WELCOME frame. */
export function welcomeFrame(pages: number): Buffer {
  const b = Buffer.alloc(FRAME_PREFIX + 14);
  b.writeUInt32BE(15, 0);
  b[4] = FrameType.Welcome;
  b.writeUInt16BE(PAGE_CHANNEL_VERSION, 5);
  b.writeUInt32BE(PAGE_BYTES, 7);
  b.writeBigUInt64BE(BigInt(pages), 11);
  return b;
}

/** A REQUEST frame for `[first, first + count)`. */
export function requestFrame(first: number, count: number): Buffer {
  const b = Buffer.allocUnsafe(REQUEST_FRAME);
  writeRequest(b, 0, first, count);
  return b;
}

/** Writes a REQUEST frame at `at` of `b` (batching several into one write). */
export function writeRequest(b: Buffer, at: number, first: number, count: number): void {
  b.writeUInt32BE(13, at);
  b[at + 4] = FrameType.Request;
  b.writeBigUInt64BE(BigInt(first), at + 5);
  b.writeUInt32BE(count, at + 13);
}

/** The header of a PAGES frame (its page bytes follow in a second buffer). */
export function pagesHeader(first: number, count: number): Buffer {
  const b = Buffer.allocUnsafe(PAGES_HEADER);
  b.writeUInt32BE(13 + count * PAGE_BYTES, 0);
  b[4] = FrameType.Pages;
  b.writeBigUInt64BE(BigInt(first), 5);
  b.writeUInt32BE(count, 13);
  return b;
}

/** An ERROR frame. */
export function errorFrame(code: string, message: string): Buffer {
  const [c, m] = strings(code.slice(0, 64), message.slice(0, 1000)) as [Buffer, Buffer];
  const body = 2 + c.length + 2 + m.length;
  const b = Buffer.alloc(FRAME_PREFIX + body);
  b.writeUInt32BE(1 + body, 0);
  b[4] = FrameType.Error;
  let o = b.writeUInt16BE(c.length, FRAME_PREFIX);
  o += c.copy(b, o);
  o = b.writeUInt16BE(m.length, o);
  m.copy(b, o);
  return b;
}

/** A malformed frame: the connection that sent it is closed. */
export class WireError extends Error {
  override readonly name = 'WireError';
}

/** Reads a u16-length-prefixed string at `o` of `body`; returns it and the next offset. */
export function readString(body: Buffer, o: number, what: string): [string, number] {
  if (o + 2 > body.length) throw new WireError(`${what}: truncated length`);
  const n = body.readUInt16BE(o);
  if (o + 2 + n > body.length) throw new WireError(`${what}: ${n} bytes past the frame's end`);
  return [body.toString('utf8', o + 2, o + 2 + n), o + 2 + n];
}

/** A parsed HELLO body. */
export interface Hello {
  readonly version: number;
  readonly sourceId: string;
  readonly token: string;
}

export function parseHello(body: Buffer): Hello {
  if (body.length < 2) throw new WireError('HELLO: truncated');
  const version = body.readUInt16BE(0);
  const [sourceId, o] = readString(body, 2, 'HELLO source id');
  const [token, end] = readString(body, o, 'HELLO token');
  if (end !== body.length) throw new WireError('HELLO: trailing bytes');
  return { version, sourceId, token };
}

/** A u64 that must be a safe integer (page numbers). */
export function readPage(b: Buffer, o: number): number {
  const v = b.readBigUInt64BE(o);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new WireError(`page number ${v} is too large`);
  return Number(v);
}
