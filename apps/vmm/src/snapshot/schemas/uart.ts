import type { UartState } from '../../devices/uart16550.js';
import { array, bits, boolean, integer, record, sectionVersion, u8 } from './check.js';

/** Version of the `uart` section this schema reads and writes ({@link UartState} version 1). */
export const UART_SECTION_VERSION = 1;

/**
 * Most received bytes a saved UART may hold. Mirrors the receive limit of `Uart16550`
 * (`RX_LIMIT` in devices/uart16550.ts, 64 KiB), beyond which the device drops host input.
 */
export const UART_RX_LIMIT = 1 << 16;

const byteItem = (v: unknown, path: string): number => u8(v, path);

/**
 * Schema of the `uart` section (a {@link UartState}): registers with only their implemented
 * bits (IER 0x0f, MCR 0x1f, FCR 0xc9), a 16-bit divisor and at most {@link UART_RX_LIMIT}
 * received bytes.
 */
export function checkUart(body: unknown, version: number): UartState {
  const o = record(body, '', [
    'version',
    'ier',
    'lcr',
    'mcr',
    'fcr',
    'scr',
    'divisor',
    'thrInterrupt',
    'rx',
  ]);
  return {
    version: sectionVersion(o.version, version),
    ier: bits(o.ier, 'ier', 0x0f),
    lcr: u8(o.lcr, 'lcr'),
    mcr: bits(o.mcr, 'mcr', 0x1f),
    fcr: bits(o.fcr, 'fcr', 0xc9),
    scr: u8(o.scr, 'scr'),
    divisor: integer(o.divisor, 'divisor', 0, 0xffff),
    thrInterrupt: boolean(o.thrInterrupt, 'thrInterrupt'),
    rx: array(o.rx, 'rx', 0, UART_RX_LIMIT, byteItem),
  };
}
