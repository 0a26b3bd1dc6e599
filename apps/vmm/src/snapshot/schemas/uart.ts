import type { UartState } from '../../devices/uart16550.js';
import {
  bits,
  boolean,
  byteArray,
  defineSection,
  fieldLimit,
  sectionVersion,
  u16,
  u8,
} from '../table/fields.js';

/**
 * The `uart` section (a {@link UartState}): registers with only their implemented bits (IER
 * 0x0f, MCR 0x1f, FCR 0xc9), a 16-bit divisor and the received bytes not yet read, at most the
 * receive limit of `Uart16550` (`RX_LIMIT` in devices/uart16550.ts, 64 KiB, beyond which the
 * device drops host input). The 1 MiB body limit fits 64 Ki bytes of up to 4 characters each.
 */
export const UART_SECTION = defineSection<UartState>({
  name: 'uart',
  version: 1,
  maxBodyBytes: 1024 * 1024,
  fields: {
    version: sectionVersion(),
    ier: bits(0x0f),
    lcr: u8(),
    mcr: bits(0x1f),
    fcr: bits(0xc9),
    scr: u8(),
    divisor: u16(),
    thrInterrupt: boolean(),
    rx: byteArray(1 << 16),
  },
});

/** Most received bytes a saved UART may hold. */
export const UART_RX_LIMIT = fieldLimit(UART_SECTION, 'rx');
